"""`python -m tei_operator.emulator`: run the TEI emulator (see the package docstring)."""

from tei_operator.emulator import main

raise SystemExit(main())
