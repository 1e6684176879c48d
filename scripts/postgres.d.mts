/** Types of scripts/postgres.mjs, for the tests that import it. */
export interface PrivatePostgres {
  /** Superuser `postgres`, database `postgres`, over the unix socket. */
  url: string;
  port: number;
  dir: string;
  /** Stops the server and deletes its folder. */
  stop(): void;
  /** Stops the server (fast: connections are terminated), waits `downMs`, starts it again. */
  restart(downMs?: number): Promise<void>;
}
export function givenPostgresUrl(): string | undefined;
export function pgBinary(name: string): string;
export function startPostgres(opts?: {
  log?: (message: string) => void;
  /** More server settings, `name=value`. */
  settings?: string[];
}): Promise<PrivatePostgres>;
