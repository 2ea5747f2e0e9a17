"""SOAP codec of the lab: the inverse of pyVmomi's SoapStubAdapter.

Requests are parsed and responses serialised with pyVmomi's own (de)serialiser, so what the
client reads is exactly what its type system expects from vSphere.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from io import StringIO
from typing import Any
from xml.parsers.expat import ParserCreate

from pyVmomi import SoapAdapter, VmomiSupport, vmodl

API_VERSION = "8.0.3.0"
VERSION = "vim.version.v8_0_3_0"
NS = "urn:vim25"

_METHOD_TAG = re.compile(rb"<(?:[\w.-]+:)?Body\b[^>]*>\s*<(?:[\w.-]+:)?([\w.-]+)[\s/>]")
_request_types: dict[str, type] = {}
_types_lock = threading.Lock()


class SoapError(Exception):
    """A request the lab cannot even parse (answered with a vmodl.fault.InvalidRequest)."""


@dataclass
class Request:
    method: str  # wsdl name, e.g. "RetrievePropertiesEx"
    info: Any  # pyVmomi method info (params, result type)
    this: Any  # the managed object the call is on (a pyVmomi MO with _moId)
    args: dict[str, Any]  # python parameter name -> value


def _request_type(info) -> type:
    """A data type whose properties are the method's parameters, so that pyVmomi's
    deserialiser fills one instance per request exactly as it fills a response."""
    with _types_lock:
        rtype = _request_types.get(info.wsdlName)
        if rtype is None:
            props = [("_this", VmomiSupport.ManagedObject, VERSION, 0)]
            props += [(p.name, p.type, VERSION, 0) for p in info.params]
            name = f"vcbproxylab.request.{info.wsdlName}"
            VmomiSupport.CreateDataType(
                name, "VcbproxyLab" + info.wsdlName, "vmodl.DynamicData", VERSION, props
            )
            rtype = VmomiSupport.GetVmodlType(name)
            _request_types[info.wsdlName] = rtype
    return rtype


class _EnvelopeHandler(SoapAdapter.ExpatDeserializerNSHandlers):
    """Walks Envelope/Body and hands the method element to a SoapDeserializer."""

    def __init__(self, rtype: type):
        super().__init__()
        self.rtype = rtype
        self.deser = SoapAdapter.SoapDeserializer(None, VERSION)
        self.body_tag = SoapAdapter.XMLNS_SOAPENV + SoapAdapter.NS_SEP + "Body"

    def parse(self, data: bytes):
        self.parser = ParserCreate(namespace_separator=SoapAdapter.NS_SEP)
        self.parser.buffer_text = True
        SoapAdapter.SetHandlers(self.parser, SoapAdapter.GetHandlers(self))
        self.parser.Parse(data, True)
        return self.deser.GetResult()

    def StartElementHandler(self, tag, attr):
        if tag == self.body_tag:
            self.deser.Deserialize(self.parser, self.rtype, False, self.nsMap)

    def EndElementHandler(self, tag):
        pass

    def CharacterDataHandler(self, data):
        pass


# pyVmomi reads a single property through "Fetch" (not in the WSDL): _this plus a path.
FETCH_INFO = VmomiSupport.Object(
    name="fetch",
    wsdlName="Fetch",
    version=VERSION,
    isTask=False,
    result=object,
    params=(VmomiSupport.Object(name="prop", type=str, version=VERSION, flags=0),),
)


def fetch_info(mo_type, prop: str):
    """Method info whose result type is the declared type of `prop`, for the response."""
    ptype = object
    for cls in mo_type.__mro__:
        pinfo = getattr(cls, "_propInfo", {}).get(prop)
        if pinfo is not None:
            ptype = pinfo.type
            break
    return VmomiSupport.Object(
        name="fetch",
        wsdlName="Fetch",
        version=VERSION,
        isTask=False,
        result=ptype,
        params=FETCH_INFO.params,
    )


def parse_request(data: bytes) -> Request:
    match = _METHOD_TAG.search(data)
    if not match:
        raise SoapError("no SOAP Body with a method element")
    wsdl = match.group(1).decode()
    try:
        info = FETCH_INFO if wsdl == "Fetch" else VmomiSupport.GetWsdlMethod(NS, wsdl).info
    except KeyError as exc:
        raise SoapError(f"unknown method {wsdl}") from exc
    try:
        parsed = _EnvelopeHandler(_request_type(info)).parse(data)
    except Exception as exc:  # expat and pyVmomi type errors alike: the request is malformed
        raise SoapError(f"cannot parse {wsdl}: {exc}") from exc
    if parsed is None:
        raise SoapError(f"empty {wsdl} request")
    args = {p.name: getattr(parsed, p.name, None) for p in info.params}
    return Request(method=wsdl, info=info, this=getattr(parsed, "_this", None), args=args)


def _nsmap() -> dict[str, str]:
    nsmap = SoapAdapter.SOAP_NSMAP.copy()
    nsmap[NS] = ""
    return nsmap


def _envelope(body: str) -> bytes:
    return "".join(
        [
            SoapAdapter.XML_HEADER,
            "\n",
            SoapAdapter.SOAP_ENVELOPE_START,
            SoapAdapter.SOAP_BODY_START,
            "\n",
            body,
            "\n",
            SoapAdapter.SOAP_BODY_END,
            SoapAdapter.SOAP_ENVELOPE_END,
        ]
    ).encode("utf-8")


class _WireSerializer(SoapAdapter.SoapSerializer):
    """pyVmomi's serialiser, writing what vSphere writes where pyVmomi's own differs.

    A reference inside ``anyType`` (a property value, a change, a task result) is typed
    ``xsi:type="ManagedObjectReference"`` on vSphere's wire; pyVmomi writes "ManagedObject",
    which only pyVmomi reads back (govmomi drops the value). Arrays already get
    "ArrayOfManagedObjectReference" from pyVmomi.
    """

    def _QName(self, typ, defNS):
        attr, name = super()._QName(typ, defNS)
        if typ is VmomiSupport.ManagedObject:
            name += "Reference"
        return attr, name


def _to_xml(val, field) -> str:
    writer = StringIO()
    _WireSerializer(writer, VERSION, _nsmap()).Serialize(val, field)
    return writer.getvalue()


def serialize_response(info, result) -> bytes:
    parts = [f'<{info.wsdlName}Response xmlns="{NS}">']
    # vSphere leaves returnval out for "nothing" (an unset value or an empty array), even
    # where the WSDL marks it required (RetrieveProperties' ObjectContent[]).
    empty = result is None or (isinstance(result, list) and not result)
    if not empty and info.result is not type(None):
        field = VmomiSupport.Object(name="returnval", type=info.result, version=VERSION, flags=0)
        parts.append(_to_xml(result, field))
    parts.append(f"</{info.wsdlName}Response>")
    return _envelope("".join(parts))


def serialize_fault(fault: vmodl.MethodFault) -> bytes:
    """A soapenv:Fault whose <detail> pyVmomi turns back into the same vim/vmodl fault."""
    msg = getattr(fault, "msg", None) or type(fault).__name__
    # vSphere names the detail element <XxxFault>; the client strips "Fault" to find the type.
    field = VmomiSupport.Object(
        name=f"{type(fault)._wsdlName}Fault", type=object, version=VERSION, flags=0
    )
    writer = StringIO()
    _WireSerializer(writer, VERSION, _nsmap()).SerializeFaultDetail(fault, field)
    detail = writer.getvalue()
    code = "ClientFaultCode" if isinstance(fault, vmodl.fault.InvalidRequest) else "ServerFaultCode"
    body = (
        f"<{SoapAdapter.SOAP_FAULT_TAG}><faultcode>{code}</faultcode>"
        f"<faultstring>{SoapAdapter.XmlEscape(msg)}</faultstring>"
        f"<detail>{detail}</detail></{SoapAdapter.SOAP_FAULT_TAG}>"
    )
    return _envelope(body)


def service_versions_xml() -> bytes:
    """/sdk/vimServiceVersions.xml: pyVim's SmartConnect picks its API version from this."""
    prior = [
        "8.0.2.0",
        "8.0.1.0",
        "8.0.0.0",
        "7.0.3.0",
        "7.0.2.0",
        "7.0.1.0",
        "7.0.0.0",
        "6.7.3",
        "6.7",
    ]
    prior_xml = "".join(f"<version>{v}</version>" for v in prior)
    return (
        f'<?xml version="1.0" encoding="UTF-8" ?>\n<namespaces version="1.0">\n<namespace>\n'
        f"<name>urn:vim25</name>\n<version>{API_VERSION}</version>\n"
        f"<priorVersions>{prior_xml}</priorVersions>\n</namespace>\n</namespaces>\n"
    ).encode()
