"""GPU rental jobs: their model, lifecycle, leases, metering and workloads."""
