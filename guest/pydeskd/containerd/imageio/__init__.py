"""Images in and out of pydesk as files: ``docker save``/``docker load`` tars, OCI image layouts
(directories and tars), and ``docker import`` of a root filesystem tar.

What it is for: moving images without a registry. Every path in is verified the same way: the
archive is read once, each member spooled (small ones in memory, large ones into uncommitted
content-store ingests) and hashed; only when every blob an image needs is present, of the size
and digest its descriptor says, is anything committed -- under a lease, so GC cannot collect it
before the image record exists.

What it must never do: turn an archive member's name into a filesystem path (names are only
keys of an in-memory table; links are aliases inside that table), follow a link out of the
archive, or commit a blob or create an image record from an archive that fails verification.
"""
