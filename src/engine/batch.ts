/**
 * A transaction's side effects, gathered while the engine works and released after commit:
 * events, wake-ups, slot count changes. Also the concurrency-slot bookkeeping.
 */
import type { TaskCore } from '../store/store.js';
import type { DynataskEvent, JobState, TaskState } from './types.js';

export class Batch {
  readonly events: DynataskEvent[] = [];
  /** Types that became ready to claim: all of them, and per namespace (for other processes). */
  readonly readyTypes = new Set<string>();
  readonly readyByNamespace = new Map<string, Set<string>>();
  readonly slotDeltas = new Map<string, Map<string, number>>();
  /** Jobs settled in this transaction: always collected (cheap), for `onJobSettled`. */
  readonly jobsSettled: Array<{ jobId: string; state: JobState }> = [];
  /** Tasks settled by `terminate` in this transaction (a subtree may hold other tasks of the batch). */
  readonly terminated = new Set<string>();
  /** Tasks that were running when they were cancelled: their local handlers are aborted. */
  readonly cancelledRunning: string[] = [];
  private at: number | undefined;
  constructor(
    /** The transaction's time, read when first needed (see Store.transaction's clockLater). */
    private readonly clock: () => number,
    readonly wantEvents: boolean,
  ) {}

  /** Read once: every write and event of the transaction carries the same time. */
  get now(): number {
    this.at ??= this.clock();
    return this.at;
  }

  /** `at`: when the change is stamped, if not the transaction's time (a settle: see settleTime). */
  taskEvent(row: Pick<TaskCore, 'id' | 'job_id' | 'type'>, state: TaskState, at = this.now): void {
    if (this.wantEvents)
      this.events.push({
        kind: 'task',
        jobId: row.job_id,
        taskId: row.id,
        type: row.type,
        state,
        at,
      });
  }

  /** Records that a task became ready to claim, to wake workers after commit. */
  ready(row: Pick<TaskCore, 'namespace' | 'type'>): void {
    this.readyTypes.add(row.type);
    let types = this.readyByNamespace.get(row.namespace);
    if (!types) {
      types = new Set();
      this.readyByNamespace.set(row.namespace, types);
    }
    types.add(row.type);
  }

  slot(namespace: string, key: string, delta: number): void {
    let m = this.slotDeltas.get(namespace);
    if (!m) {
      m = new Map();
      this.slotDeltas.set(namespace, m);
    }
    m.set(key, (m.get(key) ?? 0) + delta);
  }
}

export const SLOT_TYPE = 1;
export const SLOT_KEY = 2;
export const typeSlot = (type: string) => `type:${type}`;
export const keySlot = (key: string) => `key:${key}`;

/** Gives back the concurrency slots a running task holds (its slot bits mean nothing otherwise). */
export function releaseSlots(
  b: Batch,
  row: Pick<TaskCore, 'state' | 'namespace' | 'type' | 'slots_held' | 'concurrency_key'>,
): void {
  if (row.state !== 'running') return;
  if (row.slots_held & SLOT_TYPE) b.slot(row.namespace, typeSlot(row.type), -1);
  if (row.slots_held & SLOT_KEY && row.concurrency_key) b.slot(row.namespace, row.concurrency_key, -1);
  // A freed slot may let a queued task of this type run: wake its workers, as new work would.
  // (Other types sharing the concurrency key find out at their next poll.)
  if (row.slots_held) b.ready(row);
  row.slots_held = 0;
}
