/**
 * Durable waits, progress and steps: what a running handler asks of the engine about itself.
 */
import type { OutcomeRow } from '../store/store.js';
import { releaseSlots } from './batch.js';
import type { AttemptRef, WaitResult, WaitSpec } from './defs.js';
import { ValidationError } from './errors.js';
import { outcomeOf, toJson } from './rows.js';
import { type EngineState, getRunning, getRunningWith } from './state.js';
import { isSettled } from './types.js';

/**
 * The heart of a durable wait. If every awaited child has settled, returns their outcomes
 * (and marks their failures as observed). Otherwise suspends the task: it leaves `running`,
 * frees its worker and slot, and is re-queued when the last awaited child settles.
 */
export async function wait(engine: EngineState, ref: AttemptRef, spec: WaitSpec): Promise<WaitResult> {
  return engine.runReadingFirst(async (tx, b) => {
    const ids = spec.all ? [] : [...new Set(spec.ids)];
    // A big set is read with one range scan over the children rather than a lookup per id.
    const scan = spec.all || ids.length > 64;
    const [row, read] = await getRunningWith(tx, ref, () => (scan ? tx.children(ref.id) : tx.outcomes(ids)));
    let children: OutcomeRow[];
    // Waiting on every child needs no per-child mark: the parent's open_children says it all.
    let all = spec.all;
    if (spec.all) {
      children = read;
    } else {
      const scanned = scan ? read : undefined;
      const got = new Map(read.map((r) => [r.id, r]));
      children = spec.ids.map((id, i) => {
        const c = got.get(id);
        if (!c || c.parent_id !== row.id)
          throw new ValidationError(
            c
              ? `wait: task ${id} (item ${i}) is not a child of task ${row.id}; only children can be awaited (a dedup key may have returned another parent's task)`
              : `wait: task ${id} (item ${i}) is not a child of task ${row.id}`,
          );
        return c;
      });
      all = scanned !== undefined && ids.length === scanned.length;
    }
    const open = children.filter((c) => !isSettled(c.state));
    if (open.length === 0) {
      const seen = [
        ...new Set(children.filter((c) => c.state === 'failed' && !c.observed && !c.ignore_failure)),
      ];
      if (seen.length) {
        await tx.updateTasks([
          ...seen.map((c) => ({ id: c.id, observed: 1 })),
          { id: row.id, unobserved_failures: Math.max(0, row.unobserved_failures - seen.length) },
        ]);
      }
      return { suspended: false, outcomes: children.map(outcomeOf) };
    }
    releaseSlots(b, row);
    const openIds = [...new Set(open.map((c) => c.id))];
    if (!all) await tx.updateTasks(openIds.map((id) => ({ id, awaited: 1 })));
    await tx.updateTasks([
      {
        id: row.id,
        state: 'waiting',
        wait_mode: all ? 1 : 2,
        wait_remaining: all ? 0 : openIds.length,
        lease_expires_at: null,
        slots_held: 0,
      },
    ]);
    b.taskEvent({ id: row.id, job_id: row.job_id, type: row.type }, 'waiting');
    return { suspended: true };
  });
}

export async function progress(engine: EngineState, ref: AttemptRef, value: unknown): Promise<void> {
  const json = toJson(value, 'progress');
  await engine.runReadingFirst(async (tx, b) => {
    const row = await getRunning(tx, ref);
    await tx.updateTasks([{ id: row.id, progress: json }]);
    if (b.wantEvents)
      b.events.push({
        kind: 'progress',
        jobId: row.job_id,
        taskId: row.id,
        type: row.type,
        progress: value,
        at: b.now,
      });
  });
}

export async function getStep(
  engine: EngineState,
  jobId: string,
  taskId: string,
  name: string,
): Promise<{ found: boolean; value: unknown }> {
  // Refused before the step's function runs, not only when its value is stored.
  engine.store.assertNotHeldByCaller?.(taskId);
  const v = await engine.store.getStep(jobId, taskId, name);
  if (v === undefined) return { found: false, value: undefined };
  // Stored as a one-element array, or an empty one for `undefined`, which JSON cannot hold.
  const arr = JSON.parse(v) as unknown[];
  return { found: true, value: arr.length ? arr[0] : undefined };
}

export async function putStep(
  engine: EngineState,
  ref: AttemptRef,
  name: string,
  value: unknown,
): Promise<void> {
  const json = value === undefined ? '[]' : `[${toJson(value, `step ${name}`)}]`;
  await engine.runReadingFirst(async (tx) => {
    const row = await getRunning(tx, ref);
    await tx.putStep(row.job_id, row.id, name, json);
  });
}
