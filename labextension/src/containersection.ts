/**
 * The side panel's "Containers" section: the user's named containers, each with its node(s), image, filesystem,
 * last use and the kernels that run in it, and Remove for each node that holds it (asked first: what was
 * installed in it there is deleted). A refusal shows on the container's entry, in the server's words.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';

import { IContainer, IKernelRow, IProblem, problemOf } from './api';
import { containerFields, removeQuestion } from './containers';
import type { ContainersModel } from './containersmodel';
import { cardButton, element, problemNode, section } from './dom';

export class ContainerSection {
  constructor(
    private readonly model: ContainersModel,
    /** The kernels of this server, to name those that run in a container. */
    private readonly kernels: () => readonly IKernelRow[]
  ) {
    this.list.className = 'jp-asgard-ContainerList';
    this.node = section('Containers', this.list);
    this.node.classList.add('jp-asgard-ContainersSection');
    this.model.changed.connect(this.render, this);
    this.render();
  }

  readonly node: HTMLElement;

  /** Draw what the model knows now; nothing is redrawn while it is what is shown (a button keeps its focus). */
  render(): void {
    const containers = this.model.containers;
    const rows = this.kernels();
    const names = new Set((containers ?? []).map(container => container.name));
    for (const name of [...this.problems.keys()].filter(known => containers && !names.has(known))) {
      this.problems.delete(name); // removed by now, elsewhere: its refusal is old news
    }
    const views = (containers ?? []).map(container => ({ container, fields: containerFields(container, rows) }));
    const key = JSON.stringify([views, containers === null, this.model.error, [...this.busy], [...this.problems]]);
    if (key === this.shownKey) {
      return;
    }
    this.shownKey = key;
    this.list.replaceChildren();
    if (this.model.error) {
      this.list.append(problemNode('jp-asgard-Container', this.model.error, 'Containers unavailable: '));
    }
    for (const view of views) {
      this.list.append(this.containerNode(view.container, view.fields));
    }
    if (!views.length && !this.model.error) {
      const note = containers === null ? 'Loading…' : 'None of your kernels has made a named container yet.';
      this.list.append(element('p', 'jp-asgard-Panel-note', note));
    }
  }

  private containerNode(container: IContainer, fields: [string, string][]): HTMLElement {
    const node = element('div', 'jp-asgard-Container');
    node.dataset.name = container.name;
    node.append(element('div', 'jp-asgard-Container-name', container.name));
    const list = element('dl', 'jp-asgard-Kernel-fields');
    for (const [label, text] of fields) {
      const value = element('dd', '', text);
      value.dataset.field = label;
      list.append(element('dt', '', label), value);
    }
    node.title = container.places
      .map(place => `${place.node}: ${place.image}${place.partition ? `, partition ${place.partition}` : ''}`)
      .join('\n');
    node.append(list);
    const problem = this.problems.get(container.name);
    if (problem) {
      node.append(problemNode('jp-asgard-Container', problem, 'Not removed: '));
    }
    const actions = element('div', 'jp-asgard-Kernel-actions');
    const several = container.nodes.length > 1;
    for (const where of container.nodes) {
      const removing = this.busy.get(container.name) === where;
      const remove = cardButton(
        'jp-asgard-Container-remove',
        removing ? 'Removing…' : several ? `Remove from ${where}` : 'Remove',
        `Delete this container from ${where}, with what was installed in it there`,
        () => void this.remove(container, where)
      );
      remove.dataset.node = where;
      remove.disabled = this.busy.has(container.name);
      actions.append(remove);
    }
    node.append(actions);
    return node;
  }

  private async remove(container: IContainer, node: string): Promise<void> {
    const answer = await showDialog({
      title: `Remove the container ${container.name} from ${node}?`,
      body: removeQuestion(container, node),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (!answer.button.accept || this.busy.has(container.name)) {
      return;
    }
    this.busy.set(container.name, node);
    this.problems.delete(container.name);
    this.render();
    try {
      await this.model.remove(container.name, node);
    } catch (error) {
      this.problems.set(container.name, problemOf(error));
    } finally {
      this.busy.delete(container.name);
      this.render();
    }
  }

  private readonly list = document.createElement('div');
  /** Containers being removed, and from which node. */
  private readonly busy = new Map<string, string>();
  /** The server's refusal of the last removal of a container. */
  private readonly problems = new Map<string, IProblem>();
  private shownKey = '';
}
