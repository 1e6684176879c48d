/**
 * Recent claims' answers by the client's claim id, so that a claim repeated after a lost
 * answer (the network failed after the claim committed) gets the same tasks instead of
 * leaving them leased to nobody until their lease expires. Per server process: a repeat that
 * reaches another server claims afresh, and the first tasks wait out their lease as before.
 */
export class ClaimMemory<T> {
  private readonly answers = new Map<string, { tasks: T[]; until: number }>();

  constructor(
    private readonly ttlMs = 60_000,
    private readonly max = 1000,
  ) {}

  /** The tasks a claim with this id was answered, if it was lately. */
  get(claimId: string): T[] | undefined {
    const a = this.answers.get(claimId);
    if (!a) return undefined;
    if (a.until >= Date.now()) return a.tasks;
    this.answers.delete(claimId);
    return undefined;
  }

  /** Remembers an answer; the oldest are forgotten first (a Map iterates in insertion order). */
  set(claimId: string, tasks: T[]): void {
    if (!tasks.length) return;
    const now = Date.now();
    for (const [id, a] of this.answers) {
      if (a.until >= now && this.answers.size < this.max) break;
      this.answers.delete(id);
    }
    this.answers.set(claimId, { tasks, until: now + this.ttlMs });
  }
}
