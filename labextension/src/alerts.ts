/**
 * When to warn the user about a kernel: its allocation, and traffic others can read. Pure decisions, each
 * alert once per key.
 */
import type { IKernelRow } from './api';
import { duration, endedWords, notebookName, phaseOf } from './format';

/** Warn when a running kernel's allocation has less than this left. */
export const LOW_TIME_SECONDS = 10 * 60;
/** Warn when the server's culler will shut an idle kernel down within this. */
export const CULL_WARNING_SECONDS = 5 * 60;

/** The kernelspec metadata that makes an Asgard kernel encrypt its traffic (read by launch/encryption.py). */
export const CURVE_METADATA = '"supported_encryption": ["curve"]';
/** The site configuration that refuses kernels in the clear (a trait of site/site_policy.py). */
export const REQUIRE_ENCRYPTION = 'c.PyxisProvisioner.transport_encryption = "required"';

export interface IAlert {
  /** Sent once per key: kernel, job and kind of event. */
  key: string;
  /** The notification's text: JupyterLab cuts it at 140 characters. */
  message: string;
  /** What it means and how to fix it, in paragraphs, where the message has no room for that. */
  details?: { title: string; paragraphs: string[] };
}

/** Which alerts were sent already: a Set, or one that outlives a page reload. */
export interface ISentAlerts {
  has(key: string): boolean;
}

/** The alerts the rows call for that have not been sent yet (keys in `sent`). */
export function alertsFor(rows: readonly IKernelRow[], sent: ISentAlerts): IAlert[] {
  const alerts: IAlert[] = [];
  for (const row of rows) {
    for (const alert of [lowTimeAlert(row), cullAlert(row), endedAlert(row), clearTrafficAlert(row)]) {
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
 * Once per kernel: it listens in the clear on its node (a kernelspec without Curve under the default
 * policy "auto", an image whose pyzmq cannot encrypt, or a site's "disabled"), where any user of that node
 * can subscribe to its output. The side panel's Traffic says so too, but nobody reads it unasked.
 */
function clearTrafficAlert(row: IKernelRow): IAlert | null {
  if (row.encryption !== 'none') {
    return null;
  }
  const node = row.node || 'its node';
  return {
    key: `${row.kernel_id}:clear-traffic`,
    message: `${kernelOf(row)} is not encrypted: other users on ${node} can read its output.`,
    details: {
      title: 'Kernel traffic not encrypted',
      paragraphs: [
        `${kernelOf(row)} listens on ${node} in the clear: any user logged in there can subscribe to its ` +
          'output and read everything it prints, and read its code on the network. They cannot run code ' +
          "in it (that needs the kernel's HMAC key).",
        `To encrypt it, add ${CURVE_METADATA} to the "metadata" of the kernelspec ` +
          `${row.kernel_name}'s kernel.json (\`jupyter asgard install\` and the Asgard panel write it) and ` +
          'restart the kernel. If the kernelspec has it, either the image cannot encrypt (its pyzmq has no ' +
          "CurveZMQ; the server's log says so): use an image with a newer pyzmq and ipykernel; or the site " +
          'turned encryption off (transport_encryption = "disabled"): ask its admins.',
        `A site can refuse kernels in the clear: ${REQUIRE_ENCRYPTION} in jupyter_server_config.py.`
      ]
    }
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
