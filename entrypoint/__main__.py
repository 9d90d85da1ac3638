from entrypoint.cli.main import main

raise SystemExit(main())
