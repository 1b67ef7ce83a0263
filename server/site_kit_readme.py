"""The README that goes into each site's startup kit, for the hospital's IT team."""

__all__ = ["site_kit_readme"]


def site_kit_readme(site: str, fleet_address: str) -> str:
    """Plain instructions for running the site node of ``site``."""
    return f"""# medfed startup kit for {site}

This folder lets this hospital's site node join the federation. Keep it on the site
node's machine only.

- `site.key`: this site's private authentication key (mode 0600). Only the account that
  runs medfed-site may read it.
- `site.key.pub`: its public half; the coordinator already holds a copy.
- `ca.crt`: the federation's CA; the node only talks to a server this CA signed.
- `site.toml`: the coordinator's address and this site's limits.

## Run the site node

1. Install medfed on the site machine (see docs/operations.md): no other software is
   fetched at run time.
2. Prepare the images into a local cache (nothing leaves the machine):
   `medfed-site prepare --data /path/to/dicom --labels labels.csv \\
      --classes no-lesion,lesion --out /srv/medfed/cache`
3. Set `[limits]` in `site.toml` as your privacy officer decides: `max-epsilon` (the budget
   over all jobs), `delta` (every job is accounted at it), and whether the site requires
   secure aggregation and differential privacy (both on by default). Jobs asking for less
   protection are refused by the site node itself.
4. Start the node: `medfed-site start --kit {site}-kit/ --data /srv/medfed/cache`

## Network

Only one **outbound** HTTPS connection is made, to `{fleet_address}`. Open no inbound
port. Only model updates (masked by secure aggregation) and aggregate metrics leave the
site; images, labels and DICOM attributes never do.

## If the key is lost or leaked

Tell the coordinator: they unregister this key and send a new kit. Never e-mail `site.key`.
"""
