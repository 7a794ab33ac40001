// The two ways an image fails to be read: it is not what criu writes (ImageFormatError), or it is past the bounds snap
// reads an image within (ImageLimitError, a restore refused with exit 11).

/** An image that is not one criu wrote: a wrong magic, a truncated entry, a field that cannot be what CRIU defines. */
export class ImageFormatError extends Error {}

/** The limits of an image past which snap does not read it: the restore is refused (exit 11). */
export class ImageLimitError extends Error {}
