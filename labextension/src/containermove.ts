/**
 * A kernel card's container notice: where the user's container is when the kernel runs away from it, with
 * "Bring it here" (asked first: the kernel restarts, what is in its memory is lost, what was installed in the
 * container comes along), then how the move goes as the kernel's row tells it, and how it ended.
 *
 * The server restarts the kernel itself, on new ports, and closes the websockets left on the old ones
 * (server/kernel_websockets.py): JupyterLab's connections to it reconnect by themselves.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';

import { AsgardAPI, IContainerMove, IKernelRow, IProblem, problemOf } from './api';
import { bringQuestion, canBring, moveUnderway, moveWords } from './containers';
import { cardButton, element, problemNode } from './dom';

export interface IContainerMoveOptions {
  api: AsgardAPI;
  /** Poll the kernels soon and fast: the move's progress shows in the kernel's row. */
  follow: () => void;
}

export class ContainerMoveBox {
  constructor(
    private readonly kernelId: string,
    private readonly options: IContainerMoveOptions
  ) {
    this.node.hidden = true;
    this.bring = cardButton(
      'jp-asgard-Kernel-bring',
      'Bring it here',
      "Copy your container, with what was installed in it, to this kernel's node: the kernel restarts",
      () => void this.askAndBring()
    );
    const actions = element('div', 'jp-asgard-Kernel-actions');
    actions.append(this.bring);
    this.node.append(this.notice, actions, this.state, this.problem);
  }

  /** The whole box: hidden while the kernel runs where its container is and no move was asked for. */
  readonly node = element('div', 'jp-asgard-Kernel-container');

  update(row: IKernelRow): void {
    this.row = row;
    // The POST's answer stands until the row shows a move (the next poll).
    const move = row.container_move ?? this.asked;
    this.notice.textContent = row.container_notice;
    this.notice.hidden = !row.container_notice;
    this.bring.hidden = !canBring({ container_home: row.container_home, container_move: move });
    this.bring.disabled = this.posting;
    this.bring.textContent = this.posting ? 'Bringing…' : 'Bring it here';
    this.state.hidden = !move;
    this.state.textContent = move ? moveWords(move) : '';
    this.state.dataset.state = this.node.dataset.state = move?.state ?? '';
    this.problem.replaceChildren(...(this.refusal ? [problemNode('jp-asgard-Kernel-move', this.refusal)] : []));
    this.node.hidden = !row.container_notice && !move && !this.refusal;
  }

  /** Ask, then ask the server to bring the container here; a refusal shows on the card. */
  async askAndBring(): Promise<void> {
    const row = this.row;
    if (!row || this.posting || moveUnderway(row.container_move)) {
      return;
    }
    const answer = await showDialog({
      title: 'Bring your container here?',
      body: bringQuestion(row),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Restart and Bring It Here' })]
    });
    if (!answer.button.accept) {
      return;
    }
    this.posting = true;
    this.refusal = null;
    this.update(row);
    try {
      this.asked = await this.options.api.bringContainer(this.kernelId);
    } catch (error) {
      this.refusal = problemOf(error);
    } finally {
      this.posting = false;
      this.update(this.row ?? row);
      this.options.follow();
    }
  }

  private readonly notice = element('div', 'jp-asgard-Kernel-notice');
  private readonly bring: HTMLButtonElement;
  private readonly state = element('div', 'jp-asgard-Kernel-move');
  private readonly problem = element('div', 'jp-asgard-Kernel-moveProblem');
  private row: IKernelRow | null = null;
  /** The move as the POST answered it (until the kernel's row carries one). */
  private asked: IContainerMove | null = null;
  private posting = false;
  /** The server's refusal of the last "Bring it here" (409: nothing to bring, a move under way). */
  private refusal: IProblem | null = null;
}
