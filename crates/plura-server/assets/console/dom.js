// Building the page: HTML and SVG elements from attributes and children (text always as text
// nodes, so agent-supplied strings never become markup), and times as people read them.
import { lang } from './i18n.js';

/** An element with attributes (on* are listeners) and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'className') node.className = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element with attributes and children. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function time(value) {
  return value ? new Date(value).toLocaleString(lang() === 'ko' ? 'ko-KR' : 'en-GB') : '-';
}

// Forms are made once per language and kept: the page is drawn again every few seconds and at
// each change in the fleet, and a new form would drop what the admin is typing.
const keptForms = new Map();

/** The form `key` in the current language, made by `make` the first time. */
export function keptForm(key, make) {
  const id = `${key}:${lang()}`;
  if (!keptForms.has(id)) keptForms.set(id, make());
  return keptForms.get(id);
}
