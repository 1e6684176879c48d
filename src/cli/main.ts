/**
 * The `dynatask` command line: thin commands over the public API (src/dynatask.ts).
 * `run` returns the exit code instead of exiting, so tests and the bin shim decide.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { NotFoundError, ValidationError } from '../engine/errors.js';
import type { JobState } from '../engine/types.js';
import type { CommonOptions } from './database.js';
import { runDemo } from './demo.js';
import { cancelJob, listJobs, purge, showJob, showTask } from './inspect.js';
import { type MigrateOptions, migrate } from './migrate.js';
import { UserError } from './output.js';
import { serverCommand } from './server.js';

const JOB_STATES: JobState[] = ['running', 'succeeded', 'failed', 'cancelled'];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function intOption(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}.`);
    return n;
  };
}

/** `--database` and `--json`, which every command takes. */
function common(cmd: Command): Command {
  return cmd
    .option(
      '--database <path|url>',
      'SQLite file, :memory:, or postgres:// URL (default: $DYNATASK_DATABASE_URL, else .dynatask/dynatask.db)',
    )
    .option('--json', 'print the result as JSON on stdout');
}

export function program(setExitCode: (code: number) => void): Command {
  const cli = new Command('dynatask')
    .description('Dependent, asynchronous job processing: task trees with durable waits.')
    .version(version(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');

  common(cli.command('demo'))
    .description('run a demo job tree (a small data pipeline) with live progress, then print a summary')
    .option('--chunks <n>', 'chunks to split the input into (3 checks each)', intOption(1, 1000), 8)
    .option('--work-ms <ms>', 'simulated work per step, in ms', intOption(0, 60_000), 300)
    .option('--fail', 'make one check fail, to see a failed job and a skipped publish step', false)
    .option('--no-progress', 'do not draw the progress bar')
    .action(async (opts: Parameters<typeof runDemo>[0]) => setExitCode(await runDemo(opts)));

  common(cli.command('jobs'))
    .description('list jobs, newest first')
    .option('--namespace <ns>', 'namespace of the jobs', 'default')
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(JOB_STATES))
    .option('--type <type>', 'only jobs whose root task has this type')
    .option('--limit <n>', 'at most this many jobs', intOption(1, 1000), 50)
    .option('--before <job-id>', 'the page after this job id (as printed at the end of a full page)')
    .action(async (opts: Parameters<typeof listJobs>[0]) => setExitCode(await listJobs(opts)));

  common(cli.command('job'))
    .description('show a job: state, result or error, and its tasks counted by state')
    .argument('<job-id>')
    .action(async (id: string, opts: CommonOptions) => setExitCode(await showJob(id, opts)));

  common(cli.command('task'))
    .description('show a task: payload, result, error, attempts and timings')
    .argument('<task-id>')
    .action(async (id: string, opts: CommonOptions) => setExitCode(await showTask(id, opts)));

  common(cli.command('cancel'))
    .description('cancel a job: every unsettled task in it is cancelled')
    .argument('<job-id>')
    .option('--reason <text>', 'recorded as the cancelled tasks’ error message')
    .action(async (id: string, opts: Parameters<typeof cancelJob>[1]) =>
      setExitCode(await cancelJob(id, opts)),
    );

  common(cli.command('purge'))
    .description('delete settled jobs, with all their tasks, settled more than a duration ago')
    .requiredOption('--older-than <duration>', 'e.g. 30s, 15m, 12h, 7d, 2w or 1h30m')
    .option('--namespace <ns>', 'namespace of the jobs to purge', 'default')
    .action(async (opts: Parameters<typeof purge>[0]) => setExitCode(await purge(opts)));

  common(cli.command('migrate'))
    .description(
      'apply the schema migrations the database lacks (every process also does on start, unless told not to)',
    )
    .option('--check', 'only list the pending migrations; exit 1 if there are any')
    .action(async (opts: MigrateOptions) => setExitCode(await migrate(opts)));

  serverCommand(cli, setExitCode);
  return cli;
}

/** Runs the CLI on `argv` (as process.argv: node, script, args...) and returns the exit code. */
export async function run(argv: string[]): Promise<number> {
  let code = 0;
  try {
    await program((c) => {
      code = c;
    }).parseAsync(argv);
    return code;
  } catch (e) {
    // Commander has already printed its message (unknown command or option, missing argument).
    if (e instanceof CommanderError) return e.exitCode;
    if (e instanceof UserError || e instanceof NotFoundError || e instanceof ValidationError) {
      console.error(`dynatask: ${e.message}`);
      return 1;
    }
    // Anything else is unexpected (a database error, a bug): the message, and the stack on request.
    const err = e instanceof Error ? e : new Error(String(e));
    console.error(`dynatask: ${err.name === 'Error' ? '' : `${err.name}: `}${err.message}`);
    if (process.env.DYNATASK_DEBUG) console.error(err.stack);
    else console.error('(set DYNATASK_DEBUG=1 to see the stack trace)');
    return 1;
  }
}
