"""The one exception root of the drivers package."""


class DriverError(Exception):
    """A time-source driver could not do what was asked (device gone, bad reply, timeout).

    Foreign exceptions (``OSError``, ``serial.SerialException``, ``ntplib.NTPException``)
    are wrapped at the boundary with ``raise DriverError(...) from e``.
    """
