// Formatting helpers. Every value may be null: it is shown as "–".
export const DASH = "–";

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const oneFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

export function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

export function int(v) {
  return isNum(v) ? intFmt.format(v) : DASH;
}

export function num1(v, unit = "") {
  return isNum(v) ? oneFmt.format(v) + unit : DASH;
}

const fixedFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

// One decimal always (table columns line up).
export function fixed1(v) {
  return isNum(v) ? fixedFmt.format(v) : DASH;
}

export function text(v) {
  return v === null || v === undefined || v === "" ? DASH : String(v);
}

// Timestamps are epoch seconds (the store keeps REAL seconds); ISO strings are accepted too.
export function toDate(ts) {
  if (ts === null || ts === undefined || ts === "") return null;
  if (isNum(ts)) return new Date(ts < 1e12 ? ts * 1000 : ts);
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n) => String(n).padStart(2, "0");

export function hms(d) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function dateTime(ts) {
  const d = toDate(ts);
  if (!d) return DASH;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms(d)}`;
}

export function ago(ts, now = Date.now()) {
  const d = toDate(ts);
  if (!d) return DASH;
  const s = Math.round((now - d.getTime()) / 1000);
  if (s < 0) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function yesNo(v) {
  if (v === true) return "yes";
  if (v === false) return "no";
  return DASH;
}

// Small DOM builder: el("td", {class: "num"}, "12").
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
