/** The Asgard icon: a GPU chip, in the theme's icon colour. */
import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M7 5h10a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2zm0 2v10h10V7z"/>
    <path d="M9.5 9.5h5v5h-5z"/>
    <path d="M8 1.5h2V4H8zm6 0h2V4h-2zM8 20h2v2.5H8zm6 0h2v2.5h-2zM1.5 8H4v2H1.5zm0 6H4v2H1.5zM20 8h2.5v2H20zm0 6h2.5v2H20z"/>
  </g>
</svg>`;

export const asgardIcon = new LabIcon({ name: 'jupyter-asgard:gpu', svgstr: svg });
