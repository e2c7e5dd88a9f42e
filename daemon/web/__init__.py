"""The review page: a small server-rendered site over the daemon's queue and archive.

* :mod:`daemon.web.guard`: who may ask (loopback, else the token), forged requests
  (CSRF token and Origin), and which files can ever be served (the daemon's own, by key);
* :mod:`daemon.web.views`: what each page shows, as plain data, from the queue, the archive
  and the live hub (:mod:`daemon.live`);
* :mod:`daemon.web.clips`: a short clip of each speaker's clearest speech;
* :mod:`daemon.web.app`: the routes (Starlette, imported only when the page is served);
* :mod:`daemon.web.server`: ``minutesd web``, or a thread of ``minutesd run`` (uvicorn).
"""
