/** Formatting for the CLI: times, durations, tables, and the error type for user mistakes. */

/** A mistake of the user (bad option, unknown id): printed as one line, never with a stack. */
export class UserError extends Error {
  override name = 'UserError';
}

const UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Parses durations such as `500ms`, `30s`, `15m`, `12h`, `7d`, `2w` or `1h30m` into ms. */
export function parseDuration(text: string): number {
  const s = text.trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let end = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * UNITS_MS[m[2]!]!;
    end = re.lastIndex;
  }
  if (s === '' || end !== s.length)
    throw new UserError(
      `invalid duration ${JSON.stringify(text)}: use a number with a unit, e.g. 30s, 15m, 12h, 7d, 2w or 1h30m`,
    );
  return Math.round(total);
}

/** A duration for people: `850 ms`, `2.41 s`, `3 min 5 s`, `2 h 10 min`, `1 h`, `3 d 4 h`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const s = Math.round(ms / 1000);
  const two = (n: number, big: string, m: number, small: string) =>
    m ? `${n} ${big} ${m} ${small}` : `${n} ${big}`;
  if (s < 3600) return two(Math.floor(s / 60), 'min', s % 60, 's');
  if (s < 86_400) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
  return two(Math.floor(s / 86_400), 'd', Math.floor((s % 86_400) / 3600), 'h');
}

/** An epoch-ms time as ISO 8601 (UTC), or `-` when absent. */
export function formatTime(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? '-' : new Date(ms).toISOString();
}

/** Left-aligned columns separated by two spaces, with a header row. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** A JSON value on one line when short, on indented lines otherwise. */
export function formatJson(value: unknown): string {
  const flat = JSON.stringify(value);
  if (flat === undefined) return 'null';
  if (flat.length <= 80) return flat;
  return JSON.stringify(value, null, 2);
}

/** Prints a value as JSON (for `--json`). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
