"""`python -m ossmount` is the same program as the `ossmount` console script."""

from ossmount.cli import main

raise SystemExit(main())
