"""wsgistack benchmark harness: provisioning, server table, load runs, report."""
