/**
 * When to warn the user about a kernel's allocation: pure decisions, each alert once per kernel and job.
 */
import type { IKernelRow } from './api';
import { duration, endedWords, notebookName, phaseOf } from './format';

/** Warn when a running kernel's allocation has less than this left. */
export const LOW_TIME_SECONDS = 10 * 60;
/** Warn when the server's culler will shut an idle kernel down within this. */
export const CULL_WARNING_SECONDS = 5 * 60;

export interface IAlert {
  /** Sent once per key: kernel, job and kind of event. */
  key: string;
  message: string;
}

/** The alerts the rows call for that have not been sent yet (keys in `sent`). */
export function alertsFor(rows: readonly IKernelRow[], sent: ReadonlySet<string>): IAlert[] {
  const alerts: IAlert[] = [];
  for (const row of rows) {
    for (const alert of [lowTimeAlert(row), cullAlert(row), endedAlert(row)]) {
      if (alert && !sent.has(alert.key)) {
        alerts.push(alert);
      }
    }
  }
  return alerts;
}

function lowTimeAlert(row: IKernelRow): IAlert | null {
  const left = row.time_left_seconds;
  if (phaseOf(row.state) !== 'running' || left === null || left === undefined || left >= LOW_TIME_SECONDS) {
    return null;
  }
  return {
    key: `${row.kernel_id}:${row.job_id}:low-time`,
    message:
      `${kernelOf(row)}: ${duration(left)} left in its Slurm allocation (job ${row.job_id}), ` +
      'then Slurm stops it. Save your work.'
  };
}

/** Once per kernel and job: an idle kernel about to be culled, with its GPUs. */
function cullAlert(row: IKernelRow): IAlert | null {
  const cull = row.cull_in_seconds;
  if (phaseOf(row.state) !== 'running' || cull === null || cull === undefined || cull > CULL_WARNING_SECONDS) {
    return null;
  }
  return {
    key: `${row.kernel_id}:${row.job_id}:cull`,
    message:
      `${kernelOf(row)}: idle for ${duration(row.idle_seconds ?? 0)}; the server shuts it down in ` +
      `${duration(cull)} and releases its GPUs. Run a cell to keep it.`
  };
}

function endedAlert(row: IKernelRow): IAlert | null {
  if (phaseOf(row.state) !== 'ended') {
    return null;
  }
  return {
    key: `${row.kernel_id}:${row.job_id}:ended`,
    message: `${kernelOf(row)}: its Slurm job ${row.job_id} ended (${endedWords(row.state)}). Start a new kernel.`
  };
}

/**
 * A kernel whose row vanished while the kernel itself lives on in the server: its job ended under it
 * (the server drops the row when the restart that follows finds the job gone). A row last seen with
 * less than a minute left ended at its time limit.
 */
export function vanishedAlert(row: IKernelRow): IAlert {
  const left = row.time_left_seconds;
  const why = left !== null && left !== undefined && left < 60 ? ' (time limit)' : '';
  return {
    key: `${row.kernel_id}:${row.job_id}:ended`,
    message: `${kernelOf(row)}: its Slurm job ${row.job_id} ended${why}. Start a new kernel.`
  };
}

function kernelOf(row: IKernelRow): string {
  const name = notebookName(row.path);
  return name ? `The Asgard kernel of ${name}` : `Asgard kernel ${row.display_name || row.kernel_name}`;
}
