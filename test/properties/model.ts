/**
 * The model the property tests generate: a job is a tree of `NodeSpec`s, each node one task
 * of the single type `node`, whose handler follows its spec (spawn its children in some style,
 * fail in some way at some point, wait for its children in some way). The task's payload names
 * its node by path ("r", "r.0", "r.0.2", ...), so the checks can map stored tasks to specs.
 */
import fc from 'fast-check';

/** How a node's handler fails, if it does. */
export type FailSpec =
  | { kind: 'none' }
  /** Throws a retryable error on attempts 1..times, then succeeds. */
  | { kind: 'flaky'; times: number }
  /** Throws a retryable error on every attempt; has `maxAttempts` attempts. */
  | { kind: 'exhaust'; maxAttempts: number }
  /** Throws NonRetryableError on its first attempt. */
  | { kind: 'nonRetryable' };

/** Where in the handler the failure of `fail` is thrown. */
export type FailAt = 'beforeSpawn' | 'afterSpawn' | 'afterWait';

/**
 * How the handler waits for its children: not at all; waitAll / waitAllSettled on all children
 * (without arguments or with every handle); or on the first half of its children only.
 */
export type WaitMode = 'none' | 'all' | 'allSettled' | 'subset' | 'subsetSettled';

/** What a handler does when waitAll throws because an awaited child did not succeed. */
export type OnChildFailure = 'rethrow' | 'nonRetryable' | 'swallow';

/** How the children are spawned: one spawnMany, one spawn each, with explicit keys, or in two calls. */
export type SpawnStyle = 'many' | 'each' | 'keyed' | 'split';

export interface NodeSpec {
  fail: FailSpec;
  failAt: FailAt;
  wait: WaitMode;
  /** For `all` and `allSettled`: pass every handle instead of waiting for "all children". */
  explicitHandles: boolean;
  onChildFailure: OnChildFailure;
  spawnStyle: SpawnStyle;
  /** Spawn option given by the parent: this node's permanent failure does not fail the parent. */
  ignoreFailure: boolean;
  children: NodeSpec[];
}

/** Extra attempts every task gets, so that one crash (a lost lease) never changes an outcome. */
export const ATTEMPT_SLACK = 2;

/** The maxAttempts a node is spawned with. */
export function maxAttemptsOf(spec: NodeSpec): number {
  switch (spec.fail.kind) {
    case 'flaky':
      return spec.fail.times + 1 + ATTEMPT_SLACK;
    case 'exhaust':
      return spec.fail.maxAttempts;
    default:
      return 1 + ATTEMPT_SLACK;
  }
}

export const ROOT_PATH = 'r';

export function childPath(path: string, i: number): string {
  return `${path}.${i}`;
}

export function parentPath(path: string): string | null {
  const i = path.lastIndexOf('.');
  return i < 0 ? null : path.slice(0, i);
}

/** The path and every ancestor path, root first. */
export function ancestorsOf(path: string): string[] {
  const parts = path.split('.');
  return parts.map((_, i) => parts.slice(0, i + 1).join('.'));
}

/** Every node of the tree by path. */
export function flatten(root: NodeSpec): Map<string, NodeSpec> {
  const out = new Map<string, NodeSpec>();
  const visit = (n: NodeSpec, path: string) => {
    out.set(path, n);
    n.children.forEach((c, i) => {
      visit(c, childPath(path, i));
    });
  };
  visit(root, ROOT_PATH);
  return out;
}

/** The children a node waits on by index: all, the first half, or none. */
export function awaitedIndexes(spec: NodeSpec): number[] {
  const n = spec.children.length;
  switch (spec.wait) {
    case 'none':
      return [];
    case 'all':
    case 'allSettled':
      return [...Array(n).keys()];
    case 'subset':
    case 'subsetSettled':
      return [...Array(Math.ceil(n / 2)).keys()];
  }
}

/** Whether the node's wait throws on a child that did not succeed (waitAll, not waitAllSettled). */
export function waitThrows(spec: NodeSpec): boolean {
  return spec.wait === 'all' || spec.wait === 'subset';
}

/** A one-line description of a tree, for failure messages. */
export function describeTree(root: NodeSpec): string {
  const lines: string[] = [];
  for (const [path, n] of flatten(root)) {
    const fail = n.fail.kind === 'none' ? '' : ` fail=${JSON.stringify(n.fail)}@${n.failAt}`;
    const wait = n.wait === 'none' ? '' : ` wait=${n.wait}${n.explicitHandles ? '(handles)' : ''}`;
    const onFail = waitThrows(n) ? ` onChildFailure=${n.onChildFailure}` : '';
    lines.push(
      `${path}: children=${n.children.length} spawn=${n.spawnStyle}${fail}${wait}${onFail}${n.ignoreFailure ? ' ignoreFailure' : ''}`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- arbitraries

const failArb: fc.Arbitrary<FailSpec> = fc.oneof(
  { weight: 12, arbitrary: fc.constant<FailSpec>({ kind: 'none' }) },
  {
    weight: 3,
    arbitrary: fc.integer({ min: 1, max: 2 }).map((times): FailSpec => ({ kind: 'flaky', times })),
  },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 1, max: 2 })
      .map((maxAttempts): FailSpec => ({ kind: 'exhaust', maxAttempts })),
  },
  { weight: 1, arbitrary: fc.constant<FailSpec>({ kind: 'nonRetryable' }) },
);

const nodeFields = {
  fail: failArb,
  failAt: fc.constantFrom<FailAt>('beforeSpawn', 'afterSpawn', 'afterWait'),
  wait: fc.constantFrom<WaitMode>('none', 'all', 'allSettled', 'subset', 'subsetSettled'),
  explicitHandles: fc.boolean(),
  onChildFailure: fc.constantFrom<OnChildFailure>('rethrow', 'nonRetryable', 'swallow'),
  spawnStyle: fc.constantFrom<SpawnStyle>('many', 'each', 'keyed', 'split'),
  ignoreFailure: fc.boolean(),
};

/**
 * Random trees: random fan-out (0..maxFanout) at every node, random depth up to `maxDepth`
 * levels. Leaves are more likely towards the bottom, so depths vary within one tree.
 */
export function treeArb(opts: { maxDepth: number; maxFanout: number }): fc.Arbitrary<NodeSpec> {
  const node: fc.Memo<NodeSpec> = fc.memo<NodeSpec>(
    (depth): fc.Arbitrary<NodeSpec> =>
      fc.record({
        ...nodeFields,
        children:
          depth <= 1
            ? fc.constant<NodeSpec[]>([])
            : fc.array(node(depth - 1), { maxLength: opts.maxFanout, depthIdentifier: 'tree' }),
      }),
  );
  return node(opts.maxDepth);
}

/** Trees whose root has at least one child (so a run has something to disrupt). */
export function nonTrivialTreeArb(opts: { maxDepth: number; maxFanout: number }): fc.Arbitrary<NodeSpec> {
  return fc
    .record({
      ...nodeFields,
      children: fc.array(treeArb({ maxDepth: opts.maxDepth - 1, maxFanout: opts.maxFanout }), {
        minLength: 1,
        maxLength: opts.maxFanout,
      }),
    })
    .map((n) => n as NodeSpec);
}

/** Wide trees: a root with many children (8..30), each a small subtree, so work completes in batches. */
export function wideTreeArb(): fc.Arbitrary<NodeSpec> {
  return fc
    .record({
      ...nodeFields,
      children: fc.array(treeArb({ maxDepth: 2, maxFanout: 3 }), { minLength: 8, maxLength: 30 }),
    })
    .map((n) => n as NodeSpec);
}

/** The mix of shapes the properties use: mostly deep non-trivial trees, some wide, a few tiny. */
export function anyTreeArb(): fc.Arbitrary<NodeSpec> {
  return fc.oneof(
    { weight: 1, arbitrary: treeArb({ maxDepth: 4, maxFanout: 4 }) },
    { weight: 4, arbitrary: nonTrivialTreeArb({ maxDepth: 4, maxFanout: 4 }) },
    { weight: 1, arbitrary: wideTreeArb() },
  );
}
