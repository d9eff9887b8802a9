/** The side panel's DOM helpers, shared by its sections. */
import type { IProblem } from './api';

/** A new element with a class and text. */
export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A panel section: a title above its content. */
export function section(title: string, content: HTMLElement): HTMLElement {
  const node = element('section', 'jp-asgard-Panel-section');
  node.append(element('h3', 'jp-asgard-Panel-sectionTitle', title), content);
  return node;
}

/** A small button of a card (a jp-Button with the panel's card style). */
export function cardButton(className: string, text: string, title: string, onClick: () => void): HTMLButtonElement {
  const button = element('button', `${className} jp-Button jp-mod-styled`, text);
  button.type = 'button';
  button.title = title;
  button.addEventListener('click', onClick);
  return button;
}

/**
 * A refusal in the server's words: its message (after prefix), and its hint on a line of its own; styled as
 * `${block}-error` and `${block}-hint` (the section's own names, which tests and styles find it by).
 */
export function problemNode(block: string, problem: IProblem, prefix = ''): HTMLElement {
  const node = element('div', `${block}-error`, `${prefix}${problem.message}`);
  if (problem.hint) {
    node.append(element('div', `${block}-hint`, `How to fix: ${problem.hint}`));
  }
  return node;
}
