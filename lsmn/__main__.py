from lsmn.cli import main

raise SystemExit(main())
