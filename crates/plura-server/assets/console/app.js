// The PLURA Fleet console: System Management over the /api/v1 API.
// Every piece of agent-supplied text reaches the page through textContent, never as HTML.
import { t, lang, toggleLang } from './i18n.js';
import { el, time } from './dom.js';
import { fleetChart } from './chart.js';
import { alertsView, auditView } from './admin.js';
import { credentialsView } from './people.js';

const app = document.getElementById('app');
document.documentElement.lang = lang();

const state = {
  token: sessionStorage.getItem('plura.token'),
  me: null,
  query: {
    status: '', group: '', kind: '', os: '', zone: '', asg: '', verdict: '', source_differs: '', q: '',
    sort: 'id', page: 1, per_page: 20,
  },
  list: { total: 0, items: [] },
  summary: null,
  coverage: null, // the watched Auto Scaling groups (plura-eni watch)
  coverageAt: 0,
  view: 'agents', // agents | alerts | audit | people
  history: null, // the fleet over time, for the chart
  range: '24h',
  historyAt: 0,
  alerts: { webhooks: [], deliveries: [] },
  audit: [],
  people: { tokens: [], users: [] },
  shownSecret: null, // a new token or password, shown once: { what, value }
  newSecret: null, // a webhook's signing secret, shown once
  selected: new Set(),
  detail: null, // { agent, events, tab }
  live: false,
};

// ---------------------------------------------------------------- roles

const may = (role) => {
  const rank = { monitor: 0, operator: 1, admin: 2 };
  return state.me && rank[state.me.role] >= rank[role];
};

// ---------------------------------------------------------------- API

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) };
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    ...options,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) {
    signOut();
    throw new ApiError(t('badToken'));
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(body.message || response.statusText);
  }
  return response.status === 204 ? null : response;
}

const getJson = async (path) => (await api(path)).json();

function listParams(extra = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries({ ...state.query, ...extra })) {
    if (value !== '' && value !== null && value !== undefined) params.set(key, value);
  }
  return params.toString();
}

// ---------------------------------------------------------------- sign-in

function signOut() {
  const endSession = sessionStorage.getItem('plura.end_session');
  let ended = Promise.resolve();
  if (sessionStorage.getItem('plura.session') && state.token) {
    // A token minted by a sign-in ends here; a CLI token is not ours to revoke.
    ended = fetch('/api/v1/session', { method: 'DELETE', headers: { Authorization: `Bearer ${state.token}` } })
      .catch(() => {});
  }
  for (const key of ['plura.token', 'plura.session', 'plura.end_session']) sessionStorage.removeItem(key);
  state.token = null;
  state.me = null;
  // A sign-in through the identity provider ends there too, which sends the browser back here.
  if (endSession) ended.then(() => window.location.assign(endSession));
  else renderSignIn();
}

/** Picks up the sign-in the identity provider's callback just started (it sent us to #sso). */
async function pickUpSso() {
  history.replaceState(null, '', '/');
  const response = await fetch('/api/v1/session/sso', { method: 'POST' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return renderSignIn(body.message || response.statusText);
  if (body.end_session_url) sessionStorage.setItem('plura.end_session', body.end_session_url);
  await signedIn(body.token, true);
}

/** Where sign-in through the identity provider starts, if this server offers it. */
let ssoOffer;
async function singleSignOn() {
  if (ssoOffer === undefined) {
    const response = await fetch('/api/v1/session/sso').catch(() => null);
    ssoOffer = response?.ok ? await response.json() : null;
  }
  return ssoOffer;
}

let signInMode = 'token';
let signInUser = '';

async function signedIn(token, session) {
  state.token = token;
  state.me = await getJson('/api/v1/me');
  sessionStorage.setItem('plura.token', token);
  if (session) sessionStorage.setItem('plura.session', '1');
  start();
}

async function renderSignIn(message) {
  const sso = await singleSignOn();
  const input = (id, type, label, extra = {}) => [
    el('label', { for: id }, label),
    el('input', { id, type, required: true, autocomplete: 'off', ...extra }),
  ];
  const fields = signInMode === 'token'
    ? [input('token', 'password', t('tokenLabel'), { placeholder: 'plura_…' }), el('small', {}, t('tokenHint'))]
    : [input('username', 'text', t('username'), { autocomplete: 'username', value: signInUser }),
      input('password', 'password', t('password'), { autocomplete: 'current-password' })];
  const mode = (name, label) => el('button', {
    type: 'button', role: 'tab', 'aria-selected': String(signInMode === name), 'data-testid': `signin-${name}`,
    onclick: () => { signInMode = name; renderSignIn(); },
  }, label);
  const form = el('form', {
    className: 'signin', 'data-testid': 'signin',
    onsubmit: async (event) => {
      event.preventDefault();
      const value = (id) => form.querySelector(`#${id}`).value;
      try {
        if (signInMode === 'token') {
          await signedIn(value('token').trim(), false);
        } else {
          signInUser = value('username');
          const response = await fetch('/api/v1/session', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ username: value('username'), password: value('password') }),
          });
          const body = await response.json();
          if (!response.ok) throw new ApiError(body.message);
          await signedIn(body.token, true);
        }
      } catch (e) {
        state.token = null;
        renderSignIn(e.message);
      }
    },
  },
  el('h1', {}, t('product')),
  sso ? [el('a', { className: 'button primary', href: sso.login_url, 'data-testid': 'signin-sso' }, t('withSso')),
    el('p', { className: 'or' }, t('orLocally'))] : null,
  el('div', { className: 'tabs', role: 'tablist' }, mode('token', t('withToken')), mode('password', t('withPassword'))),
  fields,
  message ? el('p', { className: 'error', role: 'alert' }, message) : null,
  el('button', { type: 'submit' }, t('signIn')),
  languageButton(() => renderSignIn(message)));
  app.replaceChildren(form);
  const empty = [...form.querySelectorAll('input')].find((i) => !i.value);
  empty?.focus();
}

function languageButton(rerender) {
  return el('button', {
    type: 'button', className: 'link', 'data-testid': 'language',
    onclick: () => { toggleLang(); rerender(); },
  }, t('language'));
}

// ---------------------------------------------------------------- the page

async function start() {
  if (!state.me) {
    try {
      state.me = await getJson('/api/v1/me');
    } catch {
      return renderSignIn();
    }
  }
  render();
  await refresh();
  watch();
  // Deliveries are tried after the change that caused them (and retried): no change tells of
  // them, so the alerts page looks again now and then.
  setInterval(() => { if (state.token && state.view === 'alerts') refresh(); }, 3000);
}

let refreshing = null;
let again = false;

/** Reloads the summary and the current page; calls made while one runs fold into one more. */
async function refresh() {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      again = false;
      try {
        if (state.view === 'alerts') {
          await loadAlerts();
          render();
          continue;
        }
        if (state.view === 'people') {
          const [tokens, users] = await Promise.all([getJson('/api/v1/tokens'), getJson('/api/v1/users')]);
          state.people = { tokens: tokens.items, users: users.items };
          render();
          continue;
        }
        if (state.view === 'audit') {
          state.audit = (await getJson('/api/v1/audit?limit=200')).items;
          render();
          continue;
        }
        const [summary, list] = await Promise.all([
          getJson('/api/v1/summary'),
          getJson(`/api/v1/agents?${listParams()}`),
          loadCoverage(),
          loadHistory(),
        ]);
        state.summary = summary;
        state.list = list;
        if (state.detail) {
          const id = state.detail.agent.id;
          const agent = list.items.find((a) => a.id === id) || await getJson(`/api/v1/agents/${id}`).catch(() => null);
          if (agent) {
            state.detail.agent = agent;
            state.detail.events = (await getJson(`/api/v1/agents/${id}/events`)).items;
          } else {
            state.detail = null;
          }
        }
        render();
      } catch (e) {
        if (e instanceof ApiError) toast(e.message);
      }
    } while (again);
  })();
  try {
    await refreshing;
  } finally {
    refreshing = null;
  }
}

/** The chart's figures: at most every 30 s (they are sampled once a minute) once there are some,
 * or for a new range. */
async function loadHistory(force = false) {
  const fresh = state.history?.points.length && Date.now() - state.historyAt < 30000;
  if (!force && fresh) return;
  state.history = await getJson(`/api/v1/fleet/history?range=${state.range}`);
  state.historyAt = Date.now();
}

/** The watched groups' coverage: at most every 10 s (a watch reports every 30 s by default,
 * and each look checks every instance for a running agent). */
async function loadCoverage() {
  if (state.coverage && Date.now() - state.coverageAt < 10000) return;
  state.coverage = await getJson('/api/v1/coverage?limit=20');
  state.coverageAt = Date.now();
}

async function loadAlerts() {
  const [deliveries, webhooks] = await Promise.all([
    getJson('/api/v1/alerts/deliveries?limit=100'),
    may('admin') ? getJson('/api/v1/webhooks') : { items: [] },
  ]);
  state.alerts = { deliveries: deliveries.items, webhooks: webhooks.items };
}

/** Follows the server's change stream (fetch, so the token stays in a header) and refreshes. */
async function watch() {
  const token = state.token;
  while (state.token === token) {
    try {
      const response = await fetch('/api/v1/events/stream', {
        headers: { Authorization: `Bearer ${token}` },
      });
      if (!response.ok) throw new Error(response.statusText);
      setLive(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || state.token !== token) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (/^(event|data):/m.test(frame)) refresh();
        }
      }
    } catch {
      // Reconnect below.
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function setLive(live) {
  state.live = live;
  const badge = document.querySelector('[data-testid=live]');
  if (badge) {
    badge.textContent = live ? t('live') : t('offline');
    badge.className = live ? 'live on' : 'live';
  }
}

function toast(message) {
  const note = el('div', { className: 'toast', role: 'alert' }, message);
  document.body.append(note);
  setTimeout(() => note.remove(), 5000);
}

/** A selector that finds the focused control again in a page drawn anew: its id, its
 * `data-focus` key (controls repeated per row), or its `data-testid` (controls shown once). */
function focusKey(element) {
  if (!element || element === document.body) return null;
  if (element.id) return `#${CSS.escape(element.id)}`;
  for (const attribute of ['data-focus', 'data-testid']) {
    const value = element.getAttribute(attribute);
    if (value) return `[${attribute}="${CSS.escape(value)}"]`;
  }
  return null;
}

function render() {
  // The page is drawn again every few seconds and at each change: whoever works it by keyboard
  // keeps their place.
  const focused = focusKey(document.activeElement);
  const views = {
    agents: () => [cards(), coverage(), chart(), toolbar(), table(), pager()],
    alerts: () => alertsView({
      ...state.alerts,
      newSecret: state.newSecret,
      isAdmin: may('admin'),
      api,
      changed: refresh,
      secretMade: (secret) => { state.newSecret = secret; },
      toast,
    }),
    audit: () => auditView(state.audit),
    people: () => credentialsView({
      ...state.people,
      shown: state.shownSecret,
      me: state.me,
      api,
      changed: refresh,
      made: (secret) => { state.shownSecret = secret; },
      toast,
    }),
  };
  const parts = [header(), el('main', {}, views[state.view]())];
  if (state.detail && state.view === 'agents') parts.push(detailPanel());
  app.replaceChildren(...parts);
  if (focused) document.querySelector(focused)?.focus();
}

function show(view) {
  state.view = view;
  state.shownSecret = null;
  state.detail = null;
  render();
  refresh();
}

function header() {
  const tab = (view, label) => el('button', {
    type: 'button', role: 'tab', 'aria-selected': String(state.view === view), 'data-testid': `view-${view}`,
    onclick: () => show(view),
  }, label);
  return el('header', {},
    el('h1', {}, t('product'), el('span', {}, ` · ${t('title')}`)),
    el('nav', { className: 'tabs views', role: 'tablist' },
      tab('agents', t('agents')), tab('alerts', t('alerts')),
      may('admin') ? [tab('audit', t('audit')), tab('people', t('people'))] : null),
    el('div', { className: 'who' },
      el('span', { className: state.live ? 'live on' : 'live', 'data-testid': 'live' },
        state.live ? t('live') : t('offline')),
      el('span', { 'data-testid': 'whoami' }, state.me.name),
      el('span', { className: `role ${state.me.role}`, 'data-testid': 'role' }, t(state.me.role)),
      languageButton(render),
      el('button', { type: 'button', className: 'link', 'data-testid': 'sign-out', onclick: signOut }, t('signOut'))));
}

function cards() {
  const s = state.summary;
  if (!s) return el('section', { className: 'cards' });
  const card = (label, value, testid, sub) => el('div', { className: 'card', 'data-testid': testid },
    el('div', { className: 'label' }, label), el('div', { className: 'value' }, value),
    sub ? el('div', { className: 'sub' }, sub) : null);
  const breakdown = (counts) => Object.entries(counts).map(([name, n]) => `${name || '-'} ${n}`).join(' · ');
  return el('section', { className: 'cards' },
    card(t('registered'), s.registered, 'card-registered'),
    card(t('onOff'), `${s.enabled} / ${s.disabled}`, 'card-onoff'),
    card(t('running'), s.running, 'card-running', `${t('stopped')} ${s.stopped} · ${t('unknown')} ${s.unknown}`),
    card(t('perKind'), Object.keys(s.by_kind).length, 'card-kind', breakdown(s.by_kind)),
    card(t('perOs'), Object.keys(s.by_os).length, 'card-os', breakdown(s.by_os)));
}

function chart() {
  return fleetChart({
    history: state.history,
    summary: state.summary,
    range: state.range,
    onRange: async (range) => {
      state.range = range;
      try { await loadHistory(true); } catch (e) { toast(e.message); }
      render();
    },
  });
}

function select(name, label, options) {
  return el('label', { className: 'filter' }, label,
    el('select', {
      id: `filter-${name}`, 'data-testid': `filter-${name}`,
      onchange: (e) => { state.query[name] = e.target.value; state.query.page = 1; refresh(); },
    },
    el('option', { value: '' }, t('any')),
    options.map(([value, text]) => el('option', { value, selected: state.query[name] === value }, text))));
}

let searchTimer;

/** Per watched Auto Scaling group, how many of its instances have a running agent, and the
 * instances that have none past the grace (with their silent agent, when one is known). */
function coverage() {
  const groups = state.coverage?.groups || [];
  if (!groups.length) return null;
  return el('section', { className: 'coverage', 'data-testid': 'coverage', 'aria-label': t('coverage') },
    el('h2', {}, t('coverage')),
    groups.map((g) => {
      const missing = g.uncovered.filter((i) => !i.in_grace);
      const booting = g.uncovered.length - missing.length;
      return el('div', {
        className: missing.length ? 'group uncovered' : 'group', 'data-testid': 'coverage-group', 'data-asg': g.asg,
      },
      el('strong', {}, g.asg), ' ',
      el('span', { 'data-testid': 'covered' }, t('coveredOf', { covered: g.covered, instances: g.instances })),
      booting ? el('span', { className: 'sub' }, ` · ${t('booting', { n: booting })}`) : null,
      missing.length ? el('ul', {}, missing.map((i) => el('li', { 'data-testid': 'uncovered', 'data-instance': i.instance_id },
        el('span', { className: 'mono' }, i.instance_id), ` ${i.zone} · `,
        i.agent_id ? t('agentSilent', { id: i.agent_id }) : t('noAgent'))),
      g.uncovered_more ? el('li', {}, t('andMore', { n: g.uncovered_more })) : null) : null);
    }));
}

/** Why a stopped agent stopped, as the cloud said (plura-eni watch). */
function verdictBadge(agent) {
  const verdict = agent.cloud?.verdict;
  if (!verdict || agent.status !== 'stopped') return '';
  return el('span', {
    className: verdict === 'running' ? 'badge danger' : 'badge', 'data-testid': 'verdict', 'data-verdict': verdict,
    title: agent.cloud.verdict_at ? `${t('verdictAt')} ${time(agent.cloud.verdict_at)}` : '',
  }, t(`verdict_${verdict}`));
}

/** A filter typed in (zone, group of instances), applied a moment after typing stops. */
function textFilter(name, label, placeholder) {
  return el('label', { className: 'filter' }, label, el('input', {
    id: `filter-${name}`, 'data-testid': `filter-${name}`, className: 'short', placeholder,
    value: state.query[name],
    oninput: (e) => {
      state.query[name] = e.target.value.trim();
      state.query.page = 1;
      clearTimeout(searchTimer);
      searchTimer = setTimeout(refresh, 250);
    },
  }));
}

function toolbar() {
  const s = state.summary || { by_kind: {}, by_os: {}, by_group: {} };
  const names = (counts) => Object.keys(counts || {}).filter(Boolean).map((k) => [k, k]);
  const selected = state.selected.size;
  return el('section', { className: 'toolbar' },
    el('input', {
      id: 'search', type: 'search', 'data-testid': 'search', placeholder: t('search'),
      value: state.query.q,
      oninput: (e) => {
        // Kept at once, so a live refresh while typing redraws what was typed.
        state.query.q = e.target.value;
        state.query.page = 1;
        clearTimeout(searchTimer);
        searchTimer = setTimeout(refresh, 250);
      },
    }),
    select('status', t('status'), ['running', 'stopped', 'unknown'].map((v) => [v, t(v)])),
    select('group', t('group'), names(s.by_group)),
    select('kind', t('kind'), names(s.by_kind)),
    select('os', t('os'), names(s.by_os)),
    textFilter('zone', t('zone'), 'ap-northeast-2a'),
    textFilter('asg', t('asg'), 'waf-asg'),
    select('verdict', t('reason'), ['running', 'terminated', 'instance_stopped', 'unknown'].map((v) => [v, t(`verdict_${v}`)])),
    el('label', { className: 'filter', title: t('sourceDiffersHint') },
      el('input', {
        type: 'checkbox', id: 'filter-source-differs', 'data-testid': 'filter-source-differs',
        checked: state.query.source_differs === 'true',
        onchange: (e) => { state.query.source_differs = e.target.checked ? 'true' : ''; state.query.page = 1; refresh(); },
      }), t('sourceDiffers')),
    el('label', { className: 'filter' },
      el('select', {
        id: 'per-page', 'data-testid': 'per-page',
        onchange: (e) => { state.query.per_page = Number(e.target.value); state.query.page = 1; refresh(); },
      }, [20, 50, 100].map((n) => el('option', { value: n, selected: state.query.per_page === n }, String(n)))),
      t('perPage')),
    el('button', { type: 'button', 'data-testid': 'csv', onclick: downloadCsv }, t('csv')),
    may('operator') ? el('button', {
      type: 'button', 'data-testid': 'assign-group', disabled: selected === 0, onclick: assignGroup,
    }, t('assignGroup')) : null,
    may('admin') ? el('button', {
      type: 'button', className: 'danger', 'data-testid': 'delete', disabled: selected === 0, onclick: deleteSelected,
    }, t('delete')) : null,
    may('admin') ? el('button', { type: 'button', 'data-testid': 'register', onclick: registerDialog }, t('register')) : null);
}

// [sort key (null: not sortable), label]
const COLUMNS = [
  ['id', 'no'], ['enabled', 'onOff'], ['status', 'status'], ['group', 'group'], ['ip', 'ip'],
  ['hostname', 'hostname'], ['os', 'os'], ['kind', 'kind'], [null, 'zone'], [null, 'asg'],
  ['registered_at', 'registeredAt'], ['last_seen_at', 'lastSeen'],
];

function sortBy(column) {
  const current = state.query.sort.replace(/^-/, '');
  const descending = current === column && !state.query.sort.startsWith('-');
  state.query.sort = descending ? `-${column}` : column;
  refresh();
}

function table() {
  const sortedBy = state.query.sort.replace(/^-/, '');
  const arrow = state.query.sort.startsWith('-') ? ' ▼' : ' ▲';
  const all = state.list.items.length > 0 && state.list.items.every((a) => state.selected.has(a.id));
  const head = el('tr', {},
    el('th', {}, el('input', {
      type: 'checkbox', 'aria-label': 'select all', checked: all, 'data-testid': 'select-all',
      onchange: (e) => {
        for (const a of state.list.items) e.target.checked ? state.selected.add(a.id) : state.selected.delete(a.id);
        render();
      },
    })),
    COLUMNS.map(([column, label]) => (column ? el('th', {
      'data-sort': column, onclick: () => sortBy(column), className: 'sortable',
    }, t(label), sortedBy === column ? arrow : '') : el('th', {}, t(label)))));
  const rows = state.list.items.map((agent, index) => row(agent, index));
  // A narrow window scrolls the table, not the page.
  return el('div', { className: 'table-wrap' }, el('table', { 'data-testid': 'agents' },
    el('thead', {}, head),
    el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: COLUMNS.length + 1, className: 'empty' }, t('noAgents'))))));
}

function row(agent, index) {
  const number = (state.query.page - 1) * state.query.per_page + index + 1;
  const toggle = el('button', {
    type: 'button', role: 'switch', 'aria-checked': String(agent.enabled), 'data-testid': 'toggle',
    'data-focus': `toggle-${agent.id}`,
    className: agent.enabled ? 'switch on' : 'switch', disabled: !may('operator'),
    onclick: async (e) => {
      e.stopPropagation();
      try {
        await api(`/api/v1/agents/${agent.id}`, { method: 'PATCH', body: { enabled: !agent.enabled } });
        refresh();
      } catch (err) { toast(err.message); }
    },
  }, agent.enabled ? t('on') : t('off'));
  return el('tr', {
    'data-agent-id': agent.id, 'data-hostname': agent.hostname,
    className: state.detail?.agent.id === agent.id ? 'open' : '',
    onclick: () => openDetail(agent),
  },
  el('td', { onclick: (e) => e.stopPropagation() }, el('input', {
    type: 'checkbox', 'data-testid': 'select', 'data-focus': `select-${agent.id}`,
    checked: state.selected.has(agent.id),
    'aria-label': t('selectAgent', { name: `${agent.hostname} (${agent.ip})` }),
    onchange: (e) => { e.target.checked ? state.selected.add(agent.id) : state.selected.delete(agent.id); render(); },
  })),
  el('td', {}, number),
  el('td', {}, toggle),
  el('td', {}, el('span', {
    className: `status ${agent.status}`, 'data-testid': 'status', 'data-status': agent.status, title: t(agent.status),
  }), ' ', agent.version || '-', verdictBadge(agent)),
  el('td', {}, agent.group || '-'),
  el('td', { className: 'mono' }, agent.ip, sourceDiffers(agent)
    ? el('span', {
      className: 'badge warn', 'data-testid': 'source-differs', title: t('sourceDiffersHint'),
    }, `${t('via')} ${agent.source_ip}`)
    : ''),
  // The hostname opens the details, by mouse or keyboard (the whole row does by mouse).
  el('td', {}, el('button', {
    type: 'button', className: 'link open', 'data-testid': 'open', 'data-focus': `open-${agent.id}`,
    title: agent.hostname,
    onclick: (e) => { e.stopPropagation(); openDetail(agent); },
  }, el('span', { 'data-testid': 'hostname' }, agent.hostname)), agent.last_takeover_at
    ? el('span', { className: 'badge warn', 'data-testid': 'takeover', title: `${t('takenOver')} ${time(agent.last_takeover_at)}` }, t('takenOver'))
    : ''),
  el('td', {}, el('span', { className: 'clip', title: agent.os || '' }, agent.os || '-')),
  el('td', {}, agent.kind ? el('span', { className: 'badge' }, agent.kind.toUpperCase()) : '-'),
  el('td', { 'data-testid': 'zone' }, agent.cloud?.zone || '-'),
  el('td', { 'data-testid': 'asg' }, agent.cloud?.asg || '-'),
  el('td', {}, time(agent.registered_at)),
  el('td', {}, time(agent.last_seen_at)));
}

/** The last login came from another address than the one the agent claims. */
const sourceDiffers = (agent) => agent.source_ip && agent.source_ip !== agent.ip;

/** A search counts up to a limit: past it the pager says "more than" and pages on while pages are full. */
function pager() {
  const { total, total_exact: exact = true, items } = state.list;
  const { page, per_page } = state.query;
  const pages = Math.max(1, Math.ceil(total / per_page));
  const more = exact ? page < pages : items.length === per_page;
  const go = (to) => { state.query.page = to; refresh(); };
  return el('nav', { className: 'pager' },
    el('span', { 'data-testid': 'total' }, t(exact ? 'total' : 'totalOver', { n: total })),
    el('button', { type: 'button', disabled: page <= 1, onclick: () => go(page - 1) }, t('prev')),
    el('span', {}, exact ? t('page', { p: page, n: pages }) : t('pageOpen', { p: page })),
    el('button', { type: 'button', disabled: !more, onclick: () => go(page + 1) }, t('next')));
}

// ---------------------------------------------------------------- actions

async function downloadCsv() {
  try {
    const { per_page, page, ...filters } = state.query;
    const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v !== ''));
    const blob = await (await api(`/api/v1/agents.csv?${params}`)).blob();
    const link = el('a', { href: URL.createObjectURL(blob), download: 'agents.csv' });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (e) { toast(e.message); }
}

async function assignGroup() {
  const answer = prompt(t('groupPrompt'));
  if (answer === null) return;
  const group = answer.trim() === '' ? null : answer.trim();
  await eachSelected((id) => api(`/api/v1/agents/${id}`, { method: 'PATCH', body: { group } }));
}

async function deleteSelected() {
  if (!confirm(t('confirmDelete', { n: state.selected.size }))) return;
  await eachSelected((id) => api(`/api/v1/agents/${id}`, { method: 'DELETE' }));
  state.selected.clear();
}

async function eachSelected(action) {
  try {
    await Promise.all([...state.selected].map(action));
  } catch (e) { toast(e.message); }
  refresh();
}

function registerDialog() {
  const field = (name, label, required) => el('label', {}, label,
    el('input', { name, required, 'data-testid': `register-${name}` }));
  const dialog = el('dialog', { 'data-testid': 'register-dialog' },
    el('form', {
      method: 'dialog',
      onsubmit: async (e) => {
        e.preventDefault();
        const form = new FormData(e.target);
        const body = Object.fromEntries([...form.entries()].filter(([, v]) => v !== ''));
        try {
          await api('/api/v1/agents', { method: 'POST', body });
          dialog.close();
          refresh();
        } catch (err) { toast(err.message); }
      },
    },
    el('h2', {}, t('registerTitle')),
    field('ip', t('ip'), true), field('hostname', t('hostname'), true),
    field('kind', t('kind')), field('os', t('os')), field('group', t('group')),
    el('menu', {},
      el('button', { type: 'button', onclick: () => dialog.close() }, t('cancel')),
      el('button', { type: 'submit', 'data-testid': 'register-save' }, t('save')))));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

async function openDetail(agent) {
  state.detail = { agent, events: [], tab: state.detail?.tab || 'details' };
  render();
  try {
    state.detail.events = (await getJson(`/api/v1/agents/${agent.id}/events`)).items;
    render();
  } catch (e) { toast(e.message); }
}

function closeDetail() {
  state.detail = null;
  render();
}

// Escape closes the details, as it would a dialog.
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && state.detail) closeDetail();
});

function detailPanel() {
  const { agent, events, tab } = state.detail;
  const setTab = (name) => { state.detail.tab = name; render(); };
  const facts = [
    ['hostname', agent.hostname], ['ip', agent.ip], ['status', t(agent.status)], ['os', agent.os || '-'],
    ['version', agent.version || '-'], ['kind', agent.kind || '-'], ['group', agent.group || t('none')],
    ['machineId', agent.machine_id || '-'], ['sourceIp', agent.source_ip || '-'],
    ['instanceId', agent.cloud?.instance_id || '-'], ['zone', agent.cloud?.zone || '-'],
    ['instanceType', agent.cloud?.instance_type || '-'], ['asg', agent.cloud?.asg || '-'],
    ['reason', agent.cloud?.verdict && agent.status === 'stopped'
      ? `${t(`verdict_${agent.cloud.verdict}`)} (${time(agent.cloud.verdict_at)})` : '-'],
    ['registeredAt', time(agent.registered_at)], ['lastLogin', time(agent.last_login_at)],
    ['lastSeen', time(agent.last_seen_at)],
  ];
  return el('aside', { className: 'detail', 'data-testid': 'detail' },
    el('header', {},
      el('h2', {}, el('span', { className: `status ${agent.status}`, 'data-status': agent.status }), ' ', agent.hostname),
      el('button', {
        type: 'button', className: 'link', 'data-testid': 'detail-close', onclick: closeDetail,
      }, t('close'))),
    el('div', { className: 'tabs', role: 'tablist' },
      el('button', { type: 'button', role: 'tab', 'aria-selected': String(tab === 'details'), 'data-testid': 'tab-details', onclick: () => setTab('details') }, t('details')),
      el('button', { type: 'button', role: 'tab', 'aria-selected': String(tab === 'history'), 'data-testid': 'tab-history', onclick: () => setTab('history') }, t('history'))),
    tab === 'details'
      ? el('dl', {}, facts.map(([label, value]) => [el('dt', {}, t(label)), el('dd', {}, value)]))
      : el('table', { className: 'history', 'data-testid': 'history' },
        el('thead', {}, el('tr', {}, el('th', {}, t('at')), el('th', {}, t('event')), el('th', {}, t('detail')))),
        el('tbody', {}, events.map((e) => el('tr', {},
          el('td', {}, time(e.at)), el('td', {}, el('span', { className: `event ${e.event}` }, e.event)), el('td', {}, e.detail))))));
}

if (window.location.hash === '#sso') pickUpSso(); else if (state.token) start(); else renderSignIn();
