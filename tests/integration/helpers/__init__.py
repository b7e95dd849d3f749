"""Helpers for sayin's integration tests, one module a concern (standard
library only):

  procs   the Sayin instance that starts the programs, the running Origin,
          ports, environments, logs, exit codes, polling
  api     the ingest API: starting `serve`, authors and tokens, the client
  http    a raw HTTP/1.1 client, responses, served header values, decoders
  audio   test signals, WAV writers and readers, the Ogg/Opus parser
  store   the LMDB store from outside (mdb_stat, mdb_dump), sparse files
  edges   Varnish and nginx edges started from cdn-config/
  fakes_cdn, fakes_social   fake CDN services and fake X and Facebook
"""
