"""The site: its policy as traitlets configuration (defaults and limits a launch is checked against), what it
offers (images, partitions, GPUs), the check of a site's setup and the start-time estimates. The one place
a site describes itself. Imports containers/, slurm/ and launch/, nothing above."""
