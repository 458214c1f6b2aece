"""The drift-detector service: KServe payload logs in; prediction store, drift, feedback, live performance."""
