"""Where packing runs: ``local`` (a process pool on this machine); a cluster engine plugs in beside it."""
