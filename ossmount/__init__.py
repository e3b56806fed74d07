"""ossmount: mount an Alibaba Cloud OSS bucket as a read-only FUSE filesystem."""

__version__ = "0.1.0"
