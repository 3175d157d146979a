// Bouncy Castle's opinion of Horodate's time-stamp replies (tests/tsa/test_bouncycastle.py).
//
// Reads cases from standard input, one per line, tab-separated:
//     name  request.tsq  reply.tsr  data-file  root-ca.pem  tsa-cert.pem
// and prints one line per case:
//     OK <name> serial=0x… genTime=… policy=…       the reply validates
//     REJECTED <name> status=N failInfo=a,b text=…  a refusal, parsed
//     FAIL <name> <reason>                          anything else
// The TSA certificate is the one a token without certificates (no certReq) is checked
// against; a token with them must carry exactly that one.
//
// What "validates" means here, all through Bouncy Castle (provider "BC"):
//   TimeStampResponse.validate(request)  status, message imprint, nonce, policy, certReq;
//   TimeStampToken.validate(verifier)    the signature, the ESS signing-certificate (v1 or v2)
//                                        hash against the certificate, the certificate's
//                                        extended key usage (timeStamping only, critical),
//                                        its validity at genTime;
//   PKIX path validation                 the TSA certificate up to the root, at genTime;
//   the imprint against the data file    hashed with the token's own algorithm.

import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Security;
import java.security.cert.CertPathValidator;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Set;

import org.bouncycastle.asn1.cmp.PKIFailureInfo;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoVerifierBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.operator.DigestCalculator;
import org.bouncycastle.operator.jcajce.JcaDigestCalculatorProviderBuilder;
import org.bouncycastle.tsp.TimeStampRequest;
import org.bouncycastle.tsp.TimeStampResponse;
import org.bouncycastle.tsp.TimeStampToken;

@SuppressWarnings("unchecked") // Store.getMatches returns a raw Collection
public final class BcVerify {
    private static final String[] FAIL_NAMES = {
        "badAlg", "badRequest", "badDataFormat", "timeNotAvailable", "unacceptedPolicy",
        "unacceptedExtension", "addInfoNotAvailable", "systemFailure",
    };
    private static final int[] FAIL_BITS = {
        PKIFailureInfo.badAlg, PKIFailureInfo.badRequest, PKIFailureInfo.badDataFormat,
        PKIFailureInfo.timeNotAvailable, PKIFailureInfo.unacceptedPolicy,
        PKIFailureInfo.unacceptedExtension, PKIFailureInfo.addInfoNotAvailable,
        PKIFailureInfo.systemFailure,
    };

    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.split("\t");
            try {
                System.out.println(check(f[0], Path.of(f[1]), Path.of(f[2]), Path.of(f[3]),
                                         readPem(f[4]), readPem(f[5])));
            } catch (Exception e) {
                System.out.println("FAIL " + f[0] + " " + e.getClass().getSimpleName() + ": " + e.getMessage());
            }
        }
    }

    private static String check(String name, Path tsq, Path tsr, Path data,
                                X509CertificateHolder root, X509CertificateHolder tsa) throws Exception {
        TimeStampRequest request = new TimeStampRequest(Files.readAllBytes(tsq));
        TimeStampResponse response = new TimeStampResponse(Files.readAllBytes(tsr));
        if (response.getTimeStampToken() == null) {
            return "REJECTED " + name + " status=" + response.getStatus()
                + " failInfo=" + failNames(response.getFailInfo())
                + " text=" + response.getStatusString();
        }
        response.validate(request);
        TimeStampToken token = response.getTimeStampToken();

        X509CertificateHolder signer = tsa;
        Collection<X509CertificateHolder> carried = token.getCertificates().getMatches(token.getSID());
        if (request.getCertReq()) {
            if (carried.size() != 1) {
                throw new Exception("certReq, yet the token carries " + carried.size() + " signer certificates");
            }
            signer = carried.iterator().next();
            if (!signer.equals(tsa)) {
                throw new Exception("the token carries another certificate than the TSA's");
            }
        } else if (!token.getCertificates().getMatches(null).isEmpty()) {
            throw new Exception("no certReq, yet the token carries certificates");
        }
        token.validate(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(signer));

        JcaX509CertificateConverter convert = new JcaX509CertificateConverter().setProvider("BC");
        X509Certificate leaf = convert.getCertificate(signer);
        PKIXParameters pkix = new PKIXParameters(Set.of(new TrustAnchor(convert.getCertificate(root), null)));
        pkix.setRevocationEnabled(false);
        pkix.setDate(token.getTimeStampInfo().getGenTime());
        CertificateFactory factory = CertificateFactory.getInstance("X.509", "BC");
        CertPathValidator.getInstance("PKIX", "BC")
            .validate(factory.generateCertPath(List.of(leaf)), pkix);

        DigestCalculator digest = new JcaDigestCalculatorProviderBuilder().setProvider("BC").build()
            .get(token.getTimeStampInfo().getHashAlgorithm());
        try (OutputStream out = digest.getOutputStream()) {
            out.write(Files.readAllBytes(data));
        }
        if (!Arrays.equals(digest.getDigest(), token.getTimeStampInfo().getMessageImprintDigest())) {
            throw new Exception("the message imprint is not the data's digest");
        }
        return "OK " + name
            + " serial=0x" + token.getTimeStampInfo().getSerialNumber().toString(16)
            + " genTime=" + token.getTimeStampInfo().getGenTime().toInstant()
            + " policy=" + token.getTimeStampInfo().getPolicy().getId()
            + " nonce=" + token.getTimeStampInfo().getNonce();
    }

    private static String failNames(PKIFailureInfo info) {
        if (info == null) {
            return "";
        }
        List<String> names = new ArrayList<>();
        for (int i = 0; i < FAIL_BITS.length; i++) {
            if ((info.intValue() & FAIL_BITS[i]) != 0) {
                names.add(FAIL_NAMES[i]);
            }
        }
        return String.join(",", names);
    }

    private static X509CertificateHolder readPem(String path) throws Exception {
        try (PEMParser pem = new PEMParser(new FileReader(path))) {
            return (X509CertificateHolder) pem.readObject();
        }
    }
}
