"""HTTP plumbing every route shares: request ids and the summary line (`middleware`), the one error
mapper (`errors`), strict JSON body decoding (`body`), and authentication guards (`guards`)."""
