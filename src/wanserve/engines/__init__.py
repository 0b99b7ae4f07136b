"""Video engines: they turn a validated generation request into frames or a video file.

Engines know nothing of HTTP or of the job store; the worker calls them through
`wanserve.engines.base.Engine`.
"""
