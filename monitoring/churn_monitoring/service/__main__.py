"""`python -m churn_monitoring.service`: the detector service, as `churnops monitor serve` runs it."""

import sys

from churn_monitoring.service.main import main

if __name__ == "__main__":
    sys.exit(main())
