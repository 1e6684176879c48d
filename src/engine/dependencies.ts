/**
 * Spawn-time checks of `after` dependencies that could never be met: a cycle among the tasks
 * of one spawn, or a dependency on a task that (directly or not) waits for the new task's
 * parent or another ancestor. Both refuse with a ValidationError that names the chain, before
 * anything is written.
 */

import type { OutcomeRow, StoreTx, TaskCore, TaskRow } from '../store/store.js';
import { ValidationError } from './errors.js';
import type { DepInfo } from './rows.js';
import { isSettled } from './types.js';

function named(r: { id: string; type: string; spawn_key?: string | null }): string {
  return `${r.spawn_key ?? r.id} (${r.type})`;
}

/**
 * Refuses a cycle among the tasks of one spawn call, naming it. Only these can form one:
 * a task that existed before cannot depend on a task created now.
 */
export function refuseCycles(
  deps: Array<{ row: TaskRow; on: string[]; index: number }>,
  fresh: Map<string, TaskRow>,
) {
  const edges = new Map(deps.map((d) => [d.row.id, d]));
  const state = new Map<string, 'open' | 'done'>();
  // Depth first, without recursion: a chain of 100,000 tasks in one spawn must not overflow.
  for (const d of deps) {
    if (state.has(d.row.id)) continue;
    const path: Array<{ id: string; next: number }> = [{ id: d.row.id, next: 0 }];
    state.set(d.row.id, 'open');
    while (path.length) {
      const top = path.at(-1)!;
      const on = edges.get(top.id)?.on ?? [];
      if (top.next >= on.length) {
        state.set(top.id, 'done');
        path.pop();
        continue;
      }
      const dep = on[top.next++]!;
      if (!fresh.has(dep) || state.get(dep) === 'done') continue;
      if (state.get(dep) === 'open') {
        const ids = path.map((p) => p.id);
        const cycle = [...ids.slice(ids.indexOf(dep)), dep].map((c) => named(fresh.get(c)!));
        throw new ValidationError(
          `children[${edges.get(top.id)!.index}].after: a dependency cycle among the tasks of this spawn (each after the next): ${cycle.join(' → ')}; none of them could ever run`,
        );
      }
      state.set(dep, 'open');
      path.push({ id: dep, next: 0 });
    }
  }
}

/**
 * Refuses a dependency on a task that waits, directly or not, for the new task's parent or
 * another ancestor: an ancestor settles only after its children, so neither would settle.
 * What waits for an ancestor: the ancestors above it, tasks that depend on one of those, and
 * in turn their ancestors and dependents. Dependencies on siblings (children of the same
 * parent) cannot wait for it, so the common case reads nothing; otherwise O(depth) reads,
 * plus the dependents of that set, which is usually empty.
 */
export async function refuseWaitsOnAncestors(
  tx: StoreTx,
  parent: TaskCore,
  deps: Array<{ row: TaskRow; on: string[]; index: number }>,
  depRows: Map<string, DepInfo & Pick<TaskCore, 'parent_id'>>,
  fresh: Map<string, TaskRow>,
) {
  const suspects = deps.flatMap((d) =>
    d.on.flatMap((id) => {
      const r = depRows.get(id)!;
      return fresh.has(id) || r.parent_id === parent.id || isSettled(r.state) ? [] : [{ id, index: d.index }];
    }),
  );
  if (!suspects.length) return;
  // Each task that waits for an ancestor, with the task it waits for (null: an ancestor).
  const waits = new Map<string, { row: Pick<OutcomeRow, 'id' | 'type' | 'spawn_key'>; on: string | null }>();
  waits.set(parent.id, { row: parent, on: null });
  // `on` is the child the first of them waits for; null for the new task's own ancestors.
  const ancestorsOf = async (from: string | null, on: string | null) => {
    let child = on;
    for (let id = from; id !== null && !waits.has(id); ) {
      const [r] = await tx.outcomes([id]);
      if (!r) break;
      waits.set(id, { row: r, on: child });
      if (on !== null) child = id;
      id = r.parent_id;
    }
  };
  await ancestorsOf(parent.parent_id, null);
  let frontier = [...waits.keys()];
  while (frontier.length) {
    const edges = (await tx.dependents(frontier.map((id) => ({ job_id: parent.job_id, id })))).filter(
      (e) => !waits.has(e.task_id),
    );
    const rows = edges.length ? await tx.outcomes([...new Set(edges.map((e) => e.task_id))]) : [];
    const byId = new Map(rows.map((r) => [r.id, r]));
    const added: string[] = [];
    for (const e of edges) {
      const r = byId.get(e.task_id);
      if (!r || isSettled(r.state) || waits.has(r.id)) continue;
      waits.set(r.id, { row: r, on: e.depends_on });
      added.push(r.id);
      const before = waits.size;
      await ancestorsOf(r.parent_id, r.id);
      added.push(...[...waits.keys()].slice(before));
    }
    frontier = added;
  }
  for (const s of suspects) {
    if (!waits.has(s.id)) continue;
    const chain: string[] = [];
    for (let id: string | null = s.id; id !== null; id = waits.get(id)!.on) chain.push(id);
    const top = waits.get(chain.at(-1)!)!.row;
    const what =
      chain.length === 1
        ? `task ${named(top)} is ${top.id === parent.id ? 'the parent' : 'an ancestor'} of the new task`
        : `task ${named(waits.get(s.id)!.row)} waits for ${top.id === parent.id ? 'the parent' : 'an ancestor'} ${named(top)} of the new task (${chain.map((id) => named(waits.get(id)!.row)).join(' → ')})`;
    throw new ValidationError(
      `children[${s.index}].after: ${what}, which settles only after its children: the dependency would never settle`,
    );
  }
}
