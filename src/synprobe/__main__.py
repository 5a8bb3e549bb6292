from synprobe.cli import main

raise SystemExit(main())
