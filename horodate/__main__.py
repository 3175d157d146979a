from horodate.cli import main

raise SystemExit(main())
