// Numbers and times as an operator reads them.

/** 1234 → "1,234"; 1234567 → "1.23 M". */
export function count(n: number): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  return Math.round(n).toLocaleString('en-US');
}

/** A per-second rate: "–" when unknown, "0/s", "0.5/s", "12/s", "1,234/s". */
export function rate(r: number | null): string {
  if (r === null || !Number.isFinite(r)) return '–';
  if (r === 0) return '0/s';
  if (r < 10) return `${r.toFixed(1).replace(/\.0$/, '')}/s`;
  return `${count(r)}/s`;
}

/** Seconds as µs, ms or s with two or three significant digits; "–" for none. */
export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  if (s === 0) return '0 ms';
  if (s < 0.001) return `${Math.round(s * 1e6)} µs`;
  if (s < 1) return `${trim((s * 1000).toPrecision(s < 0.01 ? 2 : 3))} ms`;
  return `${trim(s.toPrecision(3))} s`;
}

function trim(n: string): string {
  return n.includes('.') ? n.replace(/0+$/, '').replace(/\.$/, '') : n;
}

/** An RFC 3339 time as "2026-11-29 04:12:07 UTC" (operators compare with logs, which are UTC). */
export function timestamp(iso: string | null | undefined): string {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** How long after `from` the time `to` came: "+12 ms", "+3.4 s", "+2 min". */
export function after(from: string, to: string): string {
  const ms = Date.parse(to) - Date.parse(from);
  if (!Number.isFinite(ms)) return '';
  if (ms < 0) return '';
  if (ms < 1000) return `+${Math.round(ms)} ms`;
  if (ms < 60_000) return `+${trim((ms / 1000).toFixed(1))} s`;
  if (ms < 3_600_000) return `+${Math.round(ms / 60_000)} min`;
  return `+${trim((ms / 3_600_000).toFixed(1))} h`;
}

/** "3 s ago" from a Unix time in seconds and now in milliseconds. */
export function ago(unixSecs: number, nowMs: number): string {
  const s = Math.max(0, Math.round(nowMs / 1000 - unixSecs));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** Bytes as "512 B", "1.5 KiB". */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${trim((n / 1024).toFixed(1))} KiB`;
  return `${trim((n / 1024 / 1024).toFixed(1))} MiB`;
}

/** "1 user", "3 users" (with the count formatted). */
export function plural(n: number, word: string): string {
  return `${count(n)} ${word}${n === 1 ? '' : 's'}`;
}
