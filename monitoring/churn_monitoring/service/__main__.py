"""`python -m churn_monitoring.service`: the detector service, as `churnops monitor serve` runs it."""

from churn_monitoring.commands import serve

if __name__ == "__main__":
    serve()
