import sys

from luigi_appliance.cli import main

sys.exit(main())
