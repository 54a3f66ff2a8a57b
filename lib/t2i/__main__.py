from t2i.front.cli import main

raise SystemExit(main())
