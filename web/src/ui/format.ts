/** Minor units as money: 1250 → "12.50" (with the currency code when known). */
export function money(minor: number, currency = ""): string {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  const text = `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
  return currency ? `${currency} ${text}` : text;
}

/** "3:07" for 187 s; "1:02:05" past an hour. */
export function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const mm = String(Math.floor((s % 3600) / 60));
  const ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm.padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** Parses "12.50" or "12,5" into minor units; NaN if it is not an amount. */
export function parseMoney(text: string): number {
  const m = /^\s*(\d+)(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!m) return Number.NaN;
  return Number(m[1]) * 100 + Number((m[2] ?? "0").padEnd(2, "0"));
}
