from maskpipe.cli import main

raise SystemExit(main())
