// The admins' and operators' pages beside the agent list: alerts (webhooks and their
// deliveries) and the audit log.
import { t } from './i18n.js';
import { el, keptForm, time } from './dom.js';

/**
 * Webhooks (for admins: add, delete, the new secret shown once) and recent deliveries. `api`
 * calls the server; `changed` reloads the page's data; `secretMade` keeps a new secret to show.
 */
export function alertsView({ webhooks, deliveries, newSecret, isAdmin, api, changed, secretMade, toast }) {
  const head = (...labels) => el('thead', {}, el('tr', {}, labels.map((l) => el('th', {}, t(l)))));
  const parts = [];
  if (isAdmin) {
    parts.push(el('h2', {}, t('webhooks')));
    if (newSecret) {
      parts.push(el('p', { className: 'notice', 'data-testid': 'webhook-secret' },
        t('secretOnce'), ' ', el('code', {}, newSecret)));
    }
    parts.push(el('table', { 'data-testid': 'webhooks' },
      head('url', 'format', 'origin', 'registeredAt', ''),
      el('tbody', {}, webhooks.length ? webhooks.map((w) => el('tr', { 'data-webhook-id': w.id },
        el('td', { className: 'mono' }, w.url), el('td', {}, w.format), el('td', {}, w.origin),
        el('td', {}, time(w.created_at)),
        el('td', {}, el('button', {
          type: 'button', className: 'danger', 'data-testid': 'webhook-delete',
          onclick: async () => {
            if (!confirm(t('confirmWebhookDelete'))) return;
            try { await api(`/api/v1/webhooks/${w.id}`, { method: 'DELETE' }); } catch (e) { toast(e.message); }
            changed();
          },
        }, t('delete'))))) : el('tr', {}, el('td', { colspan: 5, className: 'empty' }, t('noWebhooks'))))));
    parts.push(webhookForm({ api, changed, secretMade, toast }));
  }
  parts.push(el('h2', {}, t('deliveries')));
  parts.push(el('table', { 'data-testid': 'deliveries' },
    head('at', 'event', 'detail', 'url', 'state', 'attempts', 'lastError'),
    el('tbody', {}, deliveries.length ? deliveries.map((d) => el('tr', { 'data-delivery-state': d.state },
      el('td', {}, time(d.created_at)),
      el('td', {}, el('span', { className: `event ${d.event}` }, t(d.event))),
      el('td', { className: 'wrap' }, d.text),
      el('td', { className: 'mono' }, d.webhook_url),
      el('td', {}, el('span', { className: `state ${d.state}`, 'data-testid': 'delivery-state' }, t(d.state))),
      el('td', {}, d.attempts),
      el('td', { className: 'wrap' }, d.last_error || '-'))) : el('tr', {}, el('td', { colspan: 7, className: 'empty' }, t('noDeliveries'))))));
  return parts;
}

function webhookForm({ api, changed, secretMade, toast }) {
  return keptForm('webhook', () => {
    const form = el('form', {
      className: 'toolbar', 'data-testid': 'webhook-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const data = Object.fromEntries(new FormData(form).entries());
        const body = { url: data.url.trim(), format: data.format };
        if (data.secret) body.secret = data.secret;
        try {
          const created = await (await api('/api/v1/webhooks', { method: 'POST', body })).json();
          secretMade(created.secret);
          form.reset();
          changed();
        } catch (err) { toast(err.message); }
      },
    },
    // Ids, so the focus comes back to the field after each drawing.
    el('input', { id: 'webhook-url', name: 'url', type: 'url', required: true, placeholder: 'https://…', 'data-testid': 'webhook-url', className: 'wide', 'aria-label': t('url') }),
    el('select', { id: 'webhook-format', name: 'format', 'data-testid': 'webhook-format', 'aria-label': t('format') },
      el('option', { value: 'json' }, 'JSON'), el('option', { value: 'slack' }, 'Slack')),
    el('input', { id: 'webhook-secret-input', name: 'secret', type: 'password', placeholder: t('secretOptional'), autocomplete: 'off', 'aria-label': t('secretOptional') }),
    el('button', { type: 'submit', 'data-testid': 'webhook-add' }, t('addWebhook')));
    return form;
  });
}

/** Who did what, newest first (admins). */
export function auditView(records) {
  return [el('h2', {}, t('audit')), el('table', { 'data-testid': 'audit' },
    el('thead', {}, el('tr', {}, ['at', 'actor', 'action', 'hostname', 'ip', 'detail'].map((l) => el('th', {}, t(l))))),
    el('tbody', {}, records.map((r) => el('tr', { 'data-action': r.action },
      el('td', {}, time(r.at)), el('td', {}, r.actor),
      el('td', {}, el('span', { className: `event ${r.action}` }, t(r.action))),
      el('td', {}, r.hostname || '-'), el('td', { className: 'mono' }, r.ip || '-'),
      el('td', { className: 'wrap' }, r.detail || '-')))))];
}
