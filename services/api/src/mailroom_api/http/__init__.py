"""HTTP plumbing every route shares: the one error mapper (`errors`), strict JSON body decoding
(`body`) and authentication guards (`guards`). Request ids and the one summary line per request
come from `mailroom_kit.http`, the same middleware the events service uses."""
