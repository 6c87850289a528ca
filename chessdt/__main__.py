from chessdt.cli import main

raise SystemExit(main())
