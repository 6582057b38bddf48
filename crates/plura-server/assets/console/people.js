// The admins' page of credentials: API tokens (made, listed, revoked) and console users (made,
// disabled, enabled, given a new password, deleted). A new secret is shown once, then only its
// hash is kept.
import { t } from './i18n.js';
import { el, keptForm, time } from './dom.js';

const ROLES = ['monitor', 'operator', 'admin'];

const head = (...labels) => el('thead', {}, el('tr', {}, labels.map((l) => el('th', {}, l ? t(l) : ''))));

const roleSelect = (id) => el('select', { id, name: 'role', 'aria-label': t('role') },
  ROLES.map((r) => el('option', { value: r }, t(r))));

/**
 * `tokens` and `users` as the API lists them; `shown` the secret made last ({ what, value });
 * `api` calls the server; `changed` reloads; `made` keeps a new secret to show; `me` the caller.
 */
export function credentialsView({ tokens, users, shown, me, api, changed, made, toast }) {
  const act = (what) => async () => {
    try { await what(); } catch (e) { toast(e.message); }
    changed();
  };
  const button = (label, testid, onclick, className) => el('button', { type: 'button', className, 'data-testid': testid, onclick }, t(label));
  const now = Date.now();
  const expires = (at) => {
    if (!at) return t('never');
    return new Date(at).getTime() <= now ? `${time(at)} (${t('expired')})` : time(at);
  };
  return [
    shown ? el('p', { className: 'notice', 'data-testid': 'secret-once' }, t(shown.what), ' ', el('code', {}, shown.value)) : null,
    el('h2', {}, t('apiTokens')),
    el('table', { 'data-testid': 'tokens' },
      head('name', 'role', 'registeredAt', 'lastUsed', 'expires', ''),
      el('tbody', {}, tokens.length ? tokens.map((token) => el('tr', { 'data-token': token.name },
        el('td', {}, token.name), el('td', {}, t(token.role)), el('td', {}, time(token.created_at)),
        el('td', {}, token.last_used_at ? time(token.last_used_at) : t('never')),
        el('td', {}, expires(token.expires_at)),
        el('td', {}, button('revoke', 'token-revoke', act(async () => {
          if (!confirm(t('confirmRevoke', { name: token.name }))) return;
          await api(`/api/v1/tokens/${token.id}`, { method: 'DELETE' });
        }), 'danger'))))
        : el('tr', {}, el('td', { colspan: 6, className: 'empty' }, t('noTokens'))))),
    tokenForm({ api, changed, made, toast }),
    el('h2', {}, t('users')),
    el('table', { 'data-testid': 'users' },
      head('name', 'role', 'registeredAt', 'status', 'lastSignIn', 'signIns', ''),
      el('tbody', {}, users.length ? users.map((user) => {
        const path = `/api/v1/users/${encodeURIComponent(user.name)}`;
        const patch = (body) => api(path, { method: 'PATCH', body });
        const self = user.name === me.name;
        return el('tr', { 'data-user': user.name, 'data-disabled': String(Boolean(user.disabled_at)) },
          el('td', {}, user.name, user.sso_issuer
            ? el('span', { className: 'badge', title: user.sso_issuer, 'data-testid': 'user-sso' }, t('sso')) : null),
          el('td', {}, t(user.role)), el('td', {}, time(user.created_at)),
          el('td', {}, user.disabled_at ? `${t('userDisabled')} ${time(user.disabled_at)}` : t('userEnabled')),
          el('td', {}, time(user.last_sign_in_at)), el('td', {}, user.sessions),
          el('td', { className: 'actions' },
            user.disabled_at
              ? button('enable', 'user-enable', act(() => patch({ disabled: false })))
              : self ? null : button('disable', 'user-disable', act(async () => {
                if (confirm(t('confirmDisable', { name: user.name }))) await patch({ disabled: true });
              })),
            // A person of the identity provider has no password here.
            user.sso_issuer ? null : button('setPassword', 'user-password', act(async () => {
              const password = prompt(t('newPassword', { name: user.name }));
              if (password) await patch({ password });
            })),
            self ? null : button('delete', 'user-delete', act(async () => {
              if (confirm(t('confirmUserDelete', { name: user.name }))) await api(path, { method: 'DELETE' });
            }), 'danger')));
      }) : el('tr', {}, el('td', { colspan: 7, className: 'empty' }, t('noUsers'))))),
    userForm({ api, changed, made, toast }),
  ];
}

function tokenForm({ api, changed, made, toast }) {
  return keptForm('token', () => {
    const form = el('form', {
      className: 'toolbar', 'data-testid': 'token-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const data = Object.fromEntries(new FormData(form).entries());
        const body = { name: data.name.trim(), role: data.role };
        if (data.expires_in) body.expires_in = data.expires_in;
        try {
          const created = await (await api('/api/v1/tokens', { method: 'POST', body })).json();
          made({ what: 'tokenOnce', value: created.token });
          form.reset();
          changed();
        } catch (err) { toast(err.message); }
      },
    },
    el('input', { id: 'token-name', name: 'name', required: true, maxlength: 64, placeholder: t('tokenName'), 'aria-label': t('tokenName'), 'data-testid': 'token-name' }),
    roleSelect('token-role'),
    el('select', { id: 'token-expires', name: 'expires_in', 'aria-label': t('expires') },
      el('option', { value: '' }, t('never')), el('option', { value: '30d' }, t('days', { n: 30 })),
      el('option', { value: '90d' }, t('days', { n: 90 })), el('option', { value: '365d' }, t('days', { n: 365 }))),
    el('button', { type: 'submit', 'data-testid': 'token-create' }, t('createToken')));
    return form;
  });
}

function userForm({ api, changed, made, toast }) {
  return keptForm('user', () => {
    const form = el('form', {
      className: 'toolbar', 'data-testid': 'user-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const data = Object.fromEntries(new FormData(form).entries());
        const body = { name: data.name.trim(), role: data.role };
        if (data.password) body.password = data.password;
        try {
          const created = await (await api('/api/v1/users', { method: 'POST', body })).json();
          if (created.password) made({ what: 'passwordOnce', value: created.password });
          form.reset();
          changed();
        } catch (err) { toast(err.message); }
      },
    },
    el('input', { id: 'user-name', name: 'name', required: true, maxlength: 64, placeholder: t('username'), 'aria-label': t('username'), 'data-testid': 'user-name' }),
    roleSelect('user-role'),
    el('input', { id: 'user-password', name: 'password', type: 'password', minlength: 12, autocomplete: 'new-password', placeholder: t('passwordOptional'), 'aria-label': t('passwordOptional') }),
    el('button', { type: 'submit', 'data-testid': 'user-create' }, t('createUser')));
    return form;
  });
}
