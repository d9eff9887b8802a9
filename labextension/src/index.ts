/**
 * jupyter-asgard's JupyterLab front end: the status bar item, the "Asgard" side panel and the warnings,
 * all fed by one poller of the server extension's API (image imports, which take minutes, and the user's named
 * containers, listed while the panel shows them, by pollers of their own).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { KernelAPI, ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import { alertsFor, IAlert, vanishedAlert } from './alerts';
import { AsgardAPI, IKernelRow } from './api';
import { phaseOf } from './format';
import { IKeyValueStore, SentAlerts } from './sentalerts';
import { ContainerActions } from './containeractions';
import { ContainersModel } from './containersmodel';
import { asgardIcon } from './icon';
import { endedWords } from './imports';
import { ImportsModel } from './importsmodel';
import { AsgardModel, POLL_TIMES } from './model';
import { codeCellsOf, UnansweredCells } from './detachedcells';
import { AsgardPanel } from './panel';
import { StartErrors } from './starterrors';
import { AsgardStatus, sessionContextOf } from './statusbar';

const PANEL_ID = 'jupyter-asgard-panel';
const OPEN_PANEL = 'jupyter-asgard:open-panel';
const OPEN_TERMINAL = 'jupyter-asgard:open-terminal';
const SAVE_IMAGE = 'jupyter-asgard:save-image';
const PROVISIONER = 'pyxis-provisioner';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-asgard:plugin',
  description: 'Where every Asgard kernel stands in Slurm: a status bar item, a side panel and warnings.',
  autoStart: true,
  optional: [IStatusBar, ILayoutRestorer],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null, restorer: ILayoutRestorer | null) => {
    const settings = app.serviceManager.serverSettings;
    const model = new AsgardModel(new AsgardAPI(settings), POLL_TIMES, webStorage('localStorage'));
    const imports = new ImportsModel(model.api);
    const containers = new ContainersModel(model.api);

    const panel = new AsgardPanel({
      model,
      imports,
      containers,
      openPath: path => void app.commands.execute('docmanager:open', { path }),
      openTerminal: async terminal => {
        const widget = (await app.commands.execute('terminal:open', { name: terminal.name })) as Widget | undefined;
        if (widget) {
          keepTitle(widget, terminal.title);
        }
      }
    });
    const unanswered = new UnansweredCells(model.api, kernelId =>
      [...app.shell.widgets('main')]
        .filter(widget => sessionContextOf(widget)?.session?.kernel?.id === kernelId)
        .flatMap(codeCellsOf)
    );
    model.changed.connect(() => void unanswered.check(model.kernels));
    panel.id = PANEL_ID;
    panel.title.icon = asgardIcon;
    panel.title.caption = 'Asgard: kernels on Slurm';
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(OPEN_PANEL, {
      label: 'Show the Asgard Panel',
      caption: 'Where every Asgard kernel stands in Slurm',
      execute: () => app.shell.activateById(PANEL_ID)
    });

    const containerCommand = (id: string, label: string, act: (actions: ContainerActions) => Promise<void>) => {
      app.commands.addCommand(id, {
        label,
        isEnabled: () => !!(status?.currentRow && panel.containerActions(status.currentRow.kernel_id)),
        execute: async () => {
          const actions = status?.currentRow && panel.containerActions(status.currentRow.kernel_id);
          if (actions) {
            app.shell.activateById(PANEL_ID); // its progress and errors show in the panel
            await act(actions);
          }
        }
      });
      app.contextMenu.addItem({ command: id, selector: '.jp-asgard-StatusItem' });
    };
    let status: AsgardStatus | null = null;
    containerCommand(OPEN_TERMINAL, "Terminal in This Kernel's Container", actions => actions.openTerminal());
    containerCommand(SAVE_IMAGE, "Save This Kernel's Environment as Image…", actions => actions.askAndSave());

    if (statusBar) {
      const item = new AsgardStatus({
        model,
        shell: app.shell,
        mayBeAsgard: name => mayBeAsgard(app, name),
        onClick: () => void app.commands.execute(OPEN_PANEL)
      });
      status = item;
      statusBar.registerStatusItem('jupyter-asgard:status', {
        item,
        align: 'left',
        rank: 10,
        isActive: () => item.hasRow,
        activeStateChanged: item.activeChanged
      });
    }

    const sent = new SentAlerts(webStorage('sessionStorage'));
    const warn = (alert: IAlert): void => {
      if (sent.has(alert.key)) {
        return;
      }
      sent.add(alert.key);
      const show = {
        label: 'Show',
        caption: 'Open the Asgard panel',
        callback: () => app.shell.activateById(PANEL_ID)
      };
      const details = alert.details;
      const explain = details && {
        label: 'How to fix',
        caption: 'What this means and how to fix it',
        callback: () => void showDetails(details)
      };
      Notification.warning(alert.message, { autoClose: false, actions: explain ? [explain, show] : [show] });
    };
    model.changed.connect(() => alertsFor(model.kernels, sent).forEach(warn));
    model.vanished.connect((_, rows) => {
      for (const row of rows) {
        void endedUnder(row, settings).then(ended => ended && warn(vanishedAlert(row)));
      }
    });

    const startErrors = new StartErrors(settings);
    const watchWidgets = (): void => startErrors.watchAll(app.shell.widgets('main'));
    app.shell.currentChanged?.connect(watchWidgets);
    model.changed.connect(watchWidgets);
    watchWidgets();

    // An import takes minutes: its end is told wherever the user is (a cancel they did themselves is not).
    imports.ended.connect((_, ended) => {
      for (const found of ended.filter(one => one.state !== 'cancelled')) {
        const notify = found.state === 'imported' ? Notification.success : Notification.error;
        notify(endedWords(found), { autoClose: found.state === 'imported' ? 8000 : false });
      }
    });

    void model.refresh();
    void imports.refresh();
  }
};

/**
 * Title a terminal tab with its node and kernel for good: JupyterLab's terminal renames itself once it
 * connects ("Terminal 1"), and again whenever the shell sets the window title.
 */
function keepTitle(widget: Widget, label: string): void {
  const content = (widget as Widget & { content?: Widget }).content ?? widget;
  const apply = (): void => {
    if (content.title.label !== label) {
      content.title.label = label;
    }
  };
  content.title.changed.connect(apply);
  apply();
}

/**
 * The tab's sessionStorage (what this tab has shown) or the browser's localStorage (shared by its tabs), or
 * null where the browser refuses it (reading the property can throw).
 */
function webStorage(which: 'sessionStorage' | 'localStorage'): IKeyValueStore | null {
  try {
    return window[which];
  } catch {
    return null;
  }
}

/** An alert's explanation, a paragraph each, as text (it names kernelspecs and notebooks). */
async function showDetails(details: NonNullable<IAlert['details']>): Promise<void> {
  const body = new Widget();
  body.addClass('jp-asgard-AlertDetails');
  for (const text of details.paragraphs) {
    body.node.appendChild(document.createElement('p')).textContent = text;
  }
  await showDialog({ title: details.title, body, buttons: [Dialog.okButton()] });
}

/**
 * Whether a kernelspec runs its kernels through the Asgard provisioner: false for no kernelspec, true for
 * one JupyterLab does not know (yet).
 */
function mayBeAsgard(app: JupyterFrontEnd, kernelName: string | undefined): boolean {
  if (!kernelName) {
    return false;
  }
  const spec = app.serviceManager.kernelspecs.specs?.kernelspecs[kernelName];
  if (!spec) {
    return true;
  }
  const provisioner = (spec.metadata?.kernel_provisioner as { provisioner_name?: string } | undefined)
    ?.provisioner_name;
  return provisioner === PROVISIONER;
}

/**
 * Whether a kernel whose row vanished lost its job under it, rather than being shut down: a shut-down
 * kernel is gone from the server a moment later; one whose job ended lives on there, dead or restarting.
 */
async function endedUnder(row: IKernelRow, settings: ServerConnection.ISettings): Promise<boolean> {
  if (phaseOf(row.state) === 'ended' || !row.job_id) {
    return false; // warned about already, or it never had a job
  }
  await new Promise(resolve => setTimeout(resolve, 2000));
  try {
    return (await KernelAPI.getKernelModel(row.kernel_id, settings)) !== undefined;
  } catch {
    return false;
  }
}

export default plugin;
