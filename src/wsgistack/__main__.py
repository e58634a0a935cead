from wsgistack.cli import main

raise SystemExit(main())
