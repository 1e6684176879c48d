/**
 * Task and job ids: UUIDv7 (time-ordered), so a job's tasks page in creation order and
 * the primary-key index grows at its right edge. Monotonic within a process.
 */
import { randomBytes } from 'node:crypto';

let pool = randomBytes(4096);
let poolPos = 0;
let lastMs = 0;
let seq = 0;

function randomHex(bytes: number): string {
  if (poolPos + bytes > pool.length) {
    pool = randomBytes(4096);
    poolPos = 0;
  }
  const s = pool.toString('hex', poolPos, poolPos + bytes);
  poolPos += bytes;
  return s;
}

/** A new UUIDv7 string. */
export function newId(): string {
  let ms = Date.now();
  if (ms <= lastMs) {
    seq++;
    if (seq > 0xfff) {
      // 4096 ids in one millisecond: borrow the next millisecond to stay monotonic.
      lastMs++;
      seq = 0;
    }
    ms = lastMs;
  } else {
    lastMs = ms;
    seq = 0;
  }
  const t = ms.toString(16).padStart(12, '0');
  const r = randomHex(8);
  const variant = ((Number.parseInt(r.slice(0, 1), 16) & 0x3) | 0x8).toString(16);
  return `${t.slice(0, 8)}-${t.slice(8, 12)}-7${seq.toString(16).padStart(3, '0')}-${variant}${r.slice(1, 4)}-${r.slice(4, 16)}`;
}
