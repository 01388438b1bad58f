from lsmn_core.cli import main

raise SystemExit(main())
