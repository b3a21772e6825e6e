"""CoreFoundation and IOKit through ctypes: the few calls the macOS backends need.

Verified only on a Mac, not in this project's CI (which runs on Linux, where these
libraries do not exist): the tests there replace the objects below with fakes. Keep this
module small and free of logic; whatever can be computed from plain Python values
belongs in the backends' parsing functions, which are tested everywhere.

Nothing is loaded at import time. `CoreFoundation` and `IORegistry` open
their libraries when instantiated (``OSError`` where they are missing, ``AttributeError``
for a missing symbol), which the backends do only after checking the platform.

Ownership follows CoreFoundation's rule: what a ``Create``/``Copy`` call returns is owned
by the caller and released with `CoreFoundation.release`; ``Get`` results are
borrowed and must not be released.
"""

import ctypes
from typing import Any

CORE_FOUNDATION_PATH = "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation"
IOKIT_PATH = "/System/Library/Frameworks/IOKit.framework/IOKit"

_UTF8 = 0x08000100  # kCFStringEncodingUTF8
_SINT64 = 4  # kCFNumberSInt64Type
_FLOAT64 = 6  # kCFNumberFloat64Type
_MAIN_PORT = 0  # kIOMainPortDefault
_VOID_P = ctypes.c_void_p
_INDEX = ctypes.c_long  # CFIndex: a signed long on 64-bit macOS


def declare(library: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    """The C function ``name`` of ``library`` with its signature set (ctypes would
    otherwise assume ``int`` and truncate pointers). Raises AttributeError if absent."""
    function = getattr(library, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


class CoreFoundation:  # pragma: no cover (macOS)
    """CFString / CFNumber / CFData / CFDictionary / CFArray to Python, and CFRelease.

    References are plain ints (``c_void_p`` results), ``None`` for NULL.
    """

    def __init__(self, path: str = CORE_FOUNDATION_PATH):
        lib = ctypes.CDLL(path)
        self._release = declare(lib, "CFRelease", None, _VOID_P)
        self._type_of = declare(lib, "CFGetTypeID", ctypes.c_ulong, _VOID_P)
        self._new_string = declare(
            lib, "CFStringCreateWithCString", _VOID_P, _VOID_P, ctypes.c_char_p, ctypes.c_uint32
        )
        self._string_length = declare(lib, "CFStringGetLength", _INDEX, _VOID_P)
        self._string_size = declare(
            lib, "CFStringGetMaximumSizeForEncoding", _INDEX, _INDEX, ctypes.c_uint32
        )
        self._string_bytes = declare(
            lib, "CFStringGetCString", ctypes.c_bool, _VOID_P, ctypes.c_char_p, _INDEX,
            ctypes.c_uint32,
        )  # fmt: skip
        self._is_float = declare(lib, "CFNumberIsFloatType", ctypes.c_bool, _VOID_P)
        self._number = declare(lib, "CFNumberGetValue", ctypes.c_bool, _VOID_P, _INDEX, _VOID_P)
        self._boolean = declare(lib, "CFBooleanGetValue", ctypes.c_bool, _VOID_P)
        self._data_length = declare(lib, "CFDataGetLength", _INDEX, _VOID_P)
        self._data_pointer = declare(lib, "CFDataGetBytePtr", _VOID_P, _VOID_P)
        self._dict_count = declare(lib, "CFDictionaryGetCount", _INDEX, _VOID_P)
        self._dict_items = declare(
            lib, "CFDictionaryGetKeysAndValues", None, _VOID_P, _VOID_P, _VOID_P
        )
        self._dict_get = declare(lib, "CFDictionaryGetValue", _VOID_P, _VOID_P, _VOID_P)
        self._array_count = declare(lib, "CFArrayGetCount", _INDEX, _VOID_P)
        self._array_get = declare(lib, "CFArrayGetValueAtIndex", _VOID_P, _VOID_P, _INDEX)
        self._types = {
            kind: declare(lib, f"CF{kind}GetTypeID", ctypes.c_ulong)()
            for kind in ("String", "Number", "Boolean", "Data", "Dictionary", "Array")
        }

    def release(self, ref: int | None) -> None:
        """CFRelease an owned reference (NULL is ignored)."""
        if ref:
            self._release(ref)

    def string(self, text: str) -> int | None:
        """A new CFString (owned by the caller)."""
        return self._new_string(None, text.encode(), _UTF8)

    def text(self, ref: int | None) -> str | None:
        """A borrowed CFString as ``str`` (None for NULL or a failed conversion)."""
        if not ref:
            return None
        size = self._string_size(self._string_length(ref), _UTF8) + 1
        buffer = ctypes.create_string_buffer(size)
        if not self._string_bytes(ref, buffer, size, _UTF8):
            return None
        return buffer.value.decode("utf-8", "replace")

    def get(self, dictionary: int | None, key: str) -> int | None:
        """``dictionary[key]`` (borrowed) for a string key, None if absent."""
        if not dictionary:
            return None
        cf_key = self.string(key)
        try:
            return self._dict_get(dictionary, cf_key)
        finally:
            self.release(cf_key)

    def items(self, array: int | None) -> list[int]:
        """The (borrowed) elements of a CFArray."""
        if not array:
            return []
        return [self._array_get(array, i) for i in range(self._array_count(array))]

    def to_python(self, ref: int | None) -> Any:
        """A borrowed CF property-list value as str / int / float / bool / bytes / dict /
        list; None for NULL or a type a property list does not hold."""
        if not ref:
            return None
        kind = self._type_of(ref)
        types = self._types
        if kind == types["String"]:
            return self.text(ref)
        if kind == types["Boolean"]:
            return bool(self._boolean(ref))
        if kind == types["Number"]:
            return self._number_value(ref)
        if kind == types["Data"]:
            length = self._data_length(ref)
            return ctypes.string_at(self._data_pointer(ref), length) if length > 0 else b""
        if kind == types["Array"]:
            return [self.to_python(item) for item in self.items(ref)]
        if kind == types["Dictionary"]:
            return self._dict_to_python(ref)
        return None

    def _number_value(self, ref: int) -> int | float | None:
        if self._is_float(ref):
            double = ctypes.c_double()
            ok = self._number(ref, _FLOAT64, ctypes.byref(double))
            return double.value if ok else None
        integer = ctypes.c_int64()
        ok = self._number(ref, _SINT64, ctypes.byref(integer))
        return integer.value if ok else None  # not ok: an unsigned value above 2**63

    def _dict_to_python(self, ref: int) -> dict[Any, Any]:
        count = self._dict_count(ref)
        keys, values = (_VOID_P * count)(), (_VOID_P * count)()
        self._dict_items(ref, keys, values)
        return {self.to_python(k): self.to_python(v) for k, v in zip(keys, values, strict=True)}


class IORegistry:  # pragma: no cover (macOS)
    """Reads one property of IORegistry entries (``IOServiceMatching`` by class name)."""

    def __init__(self, cf: CoreFoundation | None = None, path: str = IOKIT_PATH):
        self.cf = cf if cf is not None else CoreFoundation()
        lib = ctypes.CDLL(path)
        uint32 = ctypes.c_uint32
        self._matching = declare(lib, "IOServiceMatching", _VOID_P, ctypes.c_char_p)
        self._services = declare(
            lib, "IOServiceGetMatchingServices", ctypes.c_int, uint32, _VOID_P,
            ctypes.POINTER(uint32),
        )  # fmt: skip
        self._next = declare(lib, "IOIteratorNext", uint32, uint32)
        self._name = declare(lib, "IORegistryEntryGetName", ctypes.c_int, uint32, ctypes.c_char_p)
        self._property = declare(
            lib, "IORegistryEntryCreateCFProperty", _VOID_P, uint32, _VOID_P, _VOID_P, uint32
        )
        self._object_release = declare(lib, "IOObjectRelease", ctypes.c_int, uint32)

    def properties(self, service_class: str, key: str, entry_name: str | None = None) -> list[Any]:
        """Property ``key`` of each entry of ``service_class`` (only those named
        ``entry_name`` if given), as Python values; entries without it are skipped."""
        matching = self._matching(service_class.encode())
        if not matching:
            return []
        iterator = ctypes.c_uint32()
        # IOServiceGetMatchingServices consumes the matching dictionary, even on failure.
        if self._services(_MAIN_PORT, matching, ctypes.byref(iterator)) != 0:
            return []
        found = []
        try:
            while entry := self._next(iterator.value):
                try:
                    if entry_name is None or self._entry_name(entry) == entry_name:
                        value = self._read(entry, key)
                        if value is not None:
                            found.append(value)
                finally:
                    self._object_release(entry)
        finally:
            self._object_release(iterator.value)
        return found

    def _entry_name(self, entry: int) -> str | None:
        name = ctypes.create_string_buffer(128)  # io_name_t
        if self._name(entry, name) != 0:
            return None
        return name.value.decode("utf-8", "replace")

    def _read(self, entry: int, key: str) -> Any:
        cf_key = self.cf.string(key)
        try:
            ref = self._property(entry, cf_key, None, 0)
        finally:
            self.cf.release(cf_key)
        try:
            return self.cf.to_python(ref)
        finally:
            self.cf.release(ref)
