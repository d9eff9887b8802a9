/**
 * The side panel's "Detached kernels" section: detachable kernels of the user that this server found and did
 * not take over (held by another server of theirs, kernelspec gone), with why and Adopt and Release; and
 * those that ended while no server held them, with why, until dismissed. Hidden while there are none.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';

import { IEndedKernel, IFoundKernel, IProblem, problemOf } from './api';
import { detachedName, endedLine, foundDetails, foundTooltip, releaseQuestion } from './detach';
import type { DetachedModel } from './detachedmodel';
import { cardButton, element, problemNode, section } from './dom';

export class DetachedSection {
  constructor(
    private readonly model: DetachedModel,
    /** Open a notebook (by its path relative to the server root). */
    private readonly openPath: (path: string) => void
  ) {
    this.list.className = 'jp-asgard-DetachedList';
    this.node = section('Detached kernels', this.list);
    this.node.classList.add('jp-asgard-DetachedSection');
    this.render();
  }

  readonly node: HTMLElement;

  /** Draw what the model knows now; nothing is redrawn while it is what is shown (a button keeps its focus). */
  render(): void {
    const model = this.model;
    const found = new Set(model.found.map(kernel => kernel.kernel_id));
    for (const id of [...this.problems.keys()]) {
      if (!found.has(id)) {
        this.problems.delete(id); // adopted, released, or no longer found: its refusal is old news
      }
    }
    const key = JSON.stringify([model.found, model.ended, model.error, [...this.busy], [...this.problems]]);
    if (key === this.shownKey) {
      return;
    }
    this.shownKey = key;
    this.list.replaceChildren();
    if (model.error) {
      this.list.append(problemNode('jp-asgard-Detached', model.error, 'Detached kernels unavailable: '));
    }
    for (const kernel of model.found) {
      this.list.append(this.foundNode(kernel));
    }
    for (const kernel of model.ended) {
      this.list.append(this.endedNode(kernel));
    }
    this.node.hidden = !this.list.childElementCount;
  }

  private foundNode(kernel: IFoundKernel): HTMLElement {
    const node = element('div', 'jp-asgard-Detached');
    node.dataset.kernelId = kernel.kernel_id;
    node.append(
      element('div', 'jp-asgard-Detached-name', detachedName(kernel)),
      element('div', 'jp-asgard-Detached-why', kernel.why)
    );
    const details = foundDetails(kernel);
    if (details) {
      node.append(element('div', 'jp-asgard-Detached-details', details));
    }
    node.title = foundTooltip(kernel);
    if (kernel.hub_server !== null && kernel.hub_server !== undefined) {
      node.dataset.hubServer = kernel.hub_server;
    }
    const problem = this.problems.get(kernel.kernel_id);
    if (problem) {
      node.append(problemNode('jp-asgard-Detached', problem));
    }
    const doing = this.busy.get(kernel.kernel_id);
    const adopt = cardButton(
      'jp-asgard-Detached-adopt',
      doing === 'adopt' ? 'Adopting…' : 'Adopt',
      'Take this kernel over: it becomes a kernel of this Jupyter server, with its variables',
      () => void this.adopt(kernel)
    );
    const release = cardButton(
      'jp-asgard-Detached-release',
      doing === 'release' ? 'Releasing…' : 'Release',
      'End this kernel and cancel its Slurm job: what it holds in memory is lost',
      () => void this.release(kernel)
    );
    adopt.disabled = release.disabled = !!doing;
    const actions = element('div', 'jp-asgard-Kernel-actions');
    actions.append(adopt, release);
    node.append(actions);
    return node;
  }

  private endedNode(kernel: IEndedKernel): HTMLElement {
    const node = element('div', 'jp-asgard-Detached jp-mod-ended');
    node.dataset.kernelId = kernel.kernel_id;
    node.append(
      element('div', 'jp-asgard-Detached-name', detachedName(kernel)),
      element('div', 'jp-asgard-Detached-why', endedLine(kernel))
    );
    if (kernel.job_id) {
      node.append(element('div', 'jp-asgard-Detached-details', `Slurm job ${kernel.job_id}`));
    }
    node.title = kernel.path;
    const dismiss = cardButton('jp-asgard-Detached-dismiss', 'Dismiss', 'Hide this ended kernel for good', () => {
      this.model.dismiss(kernel.kernel_id);
      this.render();
    });
    const actions = element('div', 'jp-asgard-Kernel-actions');
    actions.append(dismiss);
    node.append(actions);
    return node;
  }

  private async adopt(kernel: IFoundKernel): Promise<void> {
    const taken = await this.act(kernel, 'adopt', () => this.model.adopt(kernel.kernel_id));
    if (taken) {
      const open = kernel.path && {
        label: 'Open',
        caption: `Open ${kernel.path}`,
        callback: () => this.openPath(kernel.path)
      };
      Notification.success(`Took over the kernel of ${detachedName(kernel)}: it is a kernel of this server now.`, {
        autoClose: 8000,
        actions: open ? [open] : []
      });
    }
  }

  private async release(kernel: IFoundKernel): Promise<void> {
    const answer = await showDialog({
      title: 'Release the detached kernel?',
      body: releaseQuestion(kernel),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Release' })]
    });
    if (answer.button.accept) {
      await this.act(kernel, 'release', () => this.model.release(kernel.kernel_id));
    }
  }

  /** Run an action on a found kernel, its button busy meanwhile; a refusal shows on the kernel's entry. */
  private async act(kernel: IFoundKernel, what: string, action: () => Promise<void>): Promise<boolean> {
    const id = kernel.kernel_id;
    if (this.busy.has(id)) {
      return false;
    }
    this.busy.set(id, what);
    this.problems.delete(id);
    this.render();
    try {
      await action();
      return true;
    } catch (error) {
      this.problems.set(id, problemOf(error));
      return false;
    } finally {
      this.busy.delete(id);
      this.render();
    }
  }

  private readonly list = document.createElement('div');
  /** Kernels with an action under way, and which. */
  private readonly busy = new Map<string, string>();
  /** The server's refusal of the last action on a kernel. */
  private readonly problems = new Map<string, IProblem>();
  private shownKey = '';
}
