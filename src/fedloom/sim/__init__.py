"""fedloom.sim — simulate a federation on one machine: partitioners, executors, the driver."""
