// The fleet over time: running and stopped agents as inline SVG (no library, no CDN), so
// scale-outs, scale-ins and outages show at a glance.
import { t, lang } from './i18n.js';
import { el, svg } from './dom.js';

/** Running and stopped agents over the range, as inline SVG: scale-outs, scale-ins, outages. */
export function fleetChart({ history, summary, range, onRange }) {
  const W = 1000;
  const H = 150;
  const PAD = { left: 44, right: 12, top: 12, bottom: 22 };
  const rangeButton = (r) => el('button', {
    type: 'button', role: 'tab', 'aria-selected': String(range === r), 'data-testid': `range-${r}`,
    onclick: () => onRange(r),
  }, t(`range${r}`));
  const box = el('section', { className: 'chart', 'data-testid': 'chart' },
    el('div', { className: 'chart-head' },
      el('strong', {}, t('overTime')),
      el('span', { className: 'legend running' }, t('running')),
      el('span', { className: 'legend stopped' }, t('stopped')),
      el('div', { className: 'tabs ranges', role: 'tablist' }, ['1h', '24h', '7d'].map(rangeButton))));
  if (!history) return box;
  const from = Date.parse(history.from);
  const to = Date.parse(history.to);
  const points = history.points.map((p) => ({ at: Date.parse(p.at), running: p.running, stopped: p.stopped }));
  // The line ends at the present: the cards' counts, newer than the last sample.
  if (summary && points.length) {
    points.push({ at: to, running: summary.running, stopped: summary.stopped });
  }
  const top = Math.max(1, ...points.map((p) => Math.max(p.running, p.stopped)));
  const x = (at) => PAD.left + ((at - from) / Math.max(1, to - from)) * (W - PAD.left - PAD.right);
  const y = (n) => H - PAD.bottom - (n / top) * (H - PAD.top - PAD.bottom);
  const line = (key) => points.map((p) => `${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ');
  const dots = (key) => points.length === 1
    ? svg('circle', { cx: x(points[0].at), cy: y(points[0][key]), r: 3, class: key }) : null;
  const label = (at) => new Date(at).toLocaleString(lang() === 'ko' ? 'ko-KR' : 'en-GB',
    range === '7d' ? { month: 'short', day: 'numeric' } : { hour: '2-digit', minute: '2-digit' });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => from + f * (to - from));
  box.append(svg('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('overTime'), preserveAspectRatio: 'none',
  },
  svg('line', { x1: PAD.left, y1: y(0), x2: W - PAD.right, y2: y(0), class: 'axis' }),
  svg('line', { x1: PAD.left, y1: y(top), x2: W - PAD.right, y2: y(top), class: 'grid' }),
  svg('text', { x: PAD.left - 6, y: y(top) + 4, 'text-anchor': 'end' }, String(top)),
  svg('text', { x: PAD.left - 6, y: y(0) + 4, 'text-anchor': 'end' }, '0'),
  ticks.map((at, i) => svg('text', {
    x: x(at), y: H - 6, 'text-anchor': ['start', 'middle', 'middle', 'middle', 'end'][i],
  }, label(at))),
  svg('polyline', { points: line('running'), class: 'running', 'data-testid': 'chart-running' }),
  svg('polyline', { points: line('stopped'), class: 'stopped', 'data-testid': 'chart-stopped' }),
  dots('running'), dots('stopped')));
  if (points.length === 0) box.append(el('p', { className: 'empty' }, t('noSamples')));
  return box;
}
