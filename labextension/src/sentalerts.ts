/**
 * Which alerts this browser tab has shown: kept in its sessionStorage, so that a page reload does not show
 * again what the user has dismissed (a kernel in the clear stays in the clear), while a new tab starts
 * afresh.
 */
import type { ISentAlerts } from './alerts';

/** The part of the Web Storage API used here (sessionStorage in the browser, a Map in the tests). */
export interface IKeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

const ITEM = 'jupyter-asgard:sent-alerts';

export class SentAlerts implements ISentAlerts {
  /** store: null where the browser offers none (storage disabled); the keys then last as long as the page. */
  constructor(private readonly store: IKeyValueStore | null) {
    this.keys = new Set(load(store));
  }

  has(key: string): boolean {
    return this.keys.has(key);
  }

  add(key: string): void {
    this.keys.add(key);
    try {
      this.store?.setItem(ITEM, JSON.stringify([...this.keys]));
    } catch {
      // full or refused: this page still remembers
    }
  }

  private readonly keys: Set<string>;
}

/** The keys stored by an earlier page of this tab; none where there are none or they are unreadable. */
function load(store: IKeyValueStore | null): string[] {
  try {
    const stored: unknown = JSON.parse(store?.getItem(ITEM) ?? '[]');
    return Array.isArray(stored) ? stored.filter((key): key is string => typeof key === 'string') : [];
  } catch {
    return [];
  }
}
